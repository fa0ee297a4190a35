//! A worker session's queue of messages to send: leases from the scheduler,
//! signals from peers, acks from its own stores.
//!
//! Messages travel boxed. An unbounded tokio channel allocates its first
//! block of 32 slots when it is made; with whole `CoordinatorMessage`s in the
//! slots that is about 6.5 KiB for every connected worker, idle or not, and a
//! session has two queues. Boxed, a block is 256 bytes.

use idlecore_protocol::CoordinatorMessage;
use tokio::sync::mpsc::{self, error::TryRecvError};

/// The sending half; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox(mpsc::UnboundedSender<Box<CoordinatorMessage>>);

/// The receiving half, owned by the session.
#[derive(Debug)]
pub struct Inbox(mpsc::UnboundedReceiver<Box<CoordinatorMessage>>);

/// A new, empty queue.
pub fn outbox() -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Outbox(tx), Inbox(rx))
}

impl Outbox {
    /// Queues `msg`; `false` if the session has ended (its `Inbox` is gone).
    pub fn send(&self, msg: CoordinatorMessage) -> bool {
        self.0.send(Box::new(msg)).is_ok()
    }
}

impl Inbox {
    /// The next message; `None` once every `Outbox` is dropped and the queue is empty.
    pub async fn recv(&mut self) -> Option<CoordinatorMessage> {
        self.0.recv().await.map(|m| *m)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Result<CoordinatorMessage, TryRecvError> {
        self.0.try_recv().map(|m| *m)
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
        assert!(tx.clone().send(CoordinatorMessage::Cancel(Cancel { lease: 2 })));
        assert!(matches!(rx.try_recv(), Ok(CoordinatorMessage::Ack(Ack { lease: 1 }))));
        assert!(matches!(rx.recv().await, Some(CoordinatorMessage::Cancel(Cancel { lease: 2 }))));
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(rx);
        assert!(!tx.send(CoordinatorMessage::Ack(Ack { lease: 3 })), "no session to send to");
    }
}
