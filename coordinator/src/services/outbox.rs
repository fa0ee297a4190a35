//! A worker session's queue of messages to send: leases from the scheduler,
//! signals from peers, acks from its own stores.
//!
//! Messages travel boxed. An unbounded tokio channel allocates its first
//! block of 32 slots when it is made; with whole `CoordinatorMessage`s in the
//! slots that is about 6.5 KiB for every connected worker, idle or not, and a
//! session has two queues. Boxed, a block is 256 bytes.
//!
//! The queue counts the bytes it holds (about what the messages encode to),
//! so that a session can stop reading a worker that does not read its
//! answers (see `net/sessions.rs`): what one connection makes the
//! coordinator hold stays bounded.

use idlecore_protocol::{CoordinatorMessage, Lease};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TryRecvError};

/// The sending half; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Box<CoordinatorMessage>>,
    queued: Arc<AtomicUsize>,
}

/// The receiving half, owned by the session.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Box<CoordinatorMessage>>,
    queued: Arc<AtomicUsize>,
}

/// A new, empty queue.
pub fn outbox() -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (Outbox { tx, queued: queued.clone() }, Inbox { rx, queued })
}

/// About the bytes a message takes, queued or encoded: its variable parts
/// plus a fixed allowance.
pub fn weight(msg: &CoordinatorMessage) -> usize {
    fn lease(l: &Lease) -> usize {
        let files = l.dirs.iter().flat_map(|d| &d.files).map(|f| f.path.len() + f.data.len() + 16).sum::<usize>();
        let text = l.args.iter().map(String::len).sum::<usize>() + l.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        128 + l.stdin.len() + files + text + 64 * l.blobs.len() + 64 * l.dirs.len()
    }
    64 + match msg {
        CoordinatorMessage::Lease(l) => lease(l),
        CoordinatorMessage::Leases(ls) => ls.iter().map(lease).sum(),
        CoordinatorMessage::Cancel(c) => 16 * c.leases.len(),
        CoordinatorMessage::Sources(s) => 8 * s.peers.len(),
        CoordinatorMessage::Error(e) => e.message.len(),
        CoordinatorMessage::Signal(s) => match &s.payload {
            idlecore_protocol::SignalPayload::Offer(sdp) | idlecore_protocol::SignalPayload::Answer(sdp) => sdp.len(),
            idlecore_protocol::SignalPayload::Candidate(c) => c.candidate.len() + c.mid.len(),
            idlecore_protocol::SignalPayload::Close => 0,
        },
        CoordinatorMessage::Welcome(_) | CoordinatorMessage::Ack(_) => 0,
    }
}

impl Outbox {
    /// Queues `msg`; `false` if the session has ended (its `Inbox` is gone).
    pub fn send(&self, msg: CoordinatorMessage) -> bool {
        let w = weight(&msg);
        self.queued.fetch_add(w, Ordering::Relaxed);
        let sent = self.tx.send(Box::new(msg)).is_ok();
        if !sent {
            self.queued.fetch_sub(w, Ordering::Relaxed);
        }
        sent
    }

    /// Whether this is a sender of `inbox`'s queue.
    pub fn feeds(&self, inbox: &Inbox) -> bool {
        Arc::ptr_eq(&self.queued, &inbox.queued)
    }
}

impl Inbox {
    /// The next message; `None` once every `Outbox` is dropped and the queue is empty.
    pub async fn recv(&mut self) -> Option<CoordinatorMessage> {
        self.rx.recv().await.map(|m| self.taken(*m))
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Result<CoordinatorMessage, TryRecvError> {
        self.rx.try_recv().map(|m| self.taken(*m))
    }

    /// The bytes (by `weight`) of the messages waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn taken(&self, msg: CoordinatorMessage) -> CoordinatorMessage {
        self.queued.fetch_sub(weight(&msg), Ordering::Relaxed);
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idlecore_protocol::{Ack, Cancel};

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_closed_queue_refuses() {
        let (tx, mut rx) = outbox();
        assert!(tx.send(CoordinatorMessage::Ack(Ack { lease: 1 })));
        assert!(tx.clone().send(CoordinatorMessage::Cancel(Cancel { leases: vec![2] })));
        assert!(matches!(rx.try_recv(), Ok(CoordinatorMessage::Ack(Ack { lease: 1 }))));
        assert!(matches!(rx.recv().await, Some(CoordinatorMessage::Cancel(Cancel { leases })) if leases == [2]));
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(rx);
        assert!(!tx.send(CoordinatorMessage::Ack(Ack { lease: 3 })), "no session to send to");
    }

    #[test]
    fn the_queue_counts_what_it_holds() {
        let (tx, mut rx) = outbox();
        let (_, other) = outbox();
        assert!(tx.clone().feeds(&rx) && !tx.feeds(&other));
        let cancel = CoordinatorMessage::Cancel(Cancel { leases: vec![1; 1000] });
        let w = weight(&cancel);
        assert!(w >= 16_000, "{w}");
        tx.send(cancel.clone());
        tx.send(cancel);
        assert_eq!(rx.queued_bytes(), 2 * w);
        rx.try_recv().unwrap();
        assert_eq!(rx.queued_bytes(), w);
        rx.try_recv().unwrap();
        assert_eq!(rx.queued_bytes(), 0);
    }
}
