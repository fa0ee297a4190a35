use super::*;

struct Net {
    peers: Peers,
    now: Instant,
    /// Messages delivered to each worker, not yet looked at.
    rx: HashMap<WorkerId, VecDeque<CoordinatorMessage>>,
}

impl Net {
    fn new() -> Net {
        Net { peers: Peers::default(), now: Instant::now(), rx: HashMap::new() }
    }
    /// Workers 1..=n on no known network; worker 2 holds blob `[9; 32]`.
    fn with_holder(n: u64) -> Net {
        let mut net = Net::new();
        for w in 1..=n {
            net.join(w, None);
        }
        net.hold(2, &[Sha256Hash([9; 32])]);
        net
    }
    fn join(&mut self, w: WorkerId, origin: Option<u64>) {
        self.peers.join(w, origin, self.now);
        self.rx.insert(w, VecDeque::new());
    }
    /// `w` was given `blobs` and says it holds them.
    fn hold(&mut self, w: WorkerId, blobs: &[Sha256Hash]) {
        self.peers.given(w, blobs.iter().copied());
        self.peers.have(w, blobs);
    }
    fn relay(&mut self, from: WorkerId, signal: Signal) {
        self.peers.relay(from, signal, self.now);
    }
    /// What was delivered to `w` since the last look (to workers still here).
    fn inbox(&mut self, w: WorkerId) -> Vec<CoordinatorMessage> {
        while let Some((to, msg)) = self.peers.poll_output() {
            if let Some(rx) = self.rx.get_mut(&to) {
                rx.push_back(msg);
            }
        }
        self.rx.get_mut(&w).unwrap().drain(..).collect()
    }
}

fn offer(to: WorkerId) -> Signal {
    Signal { peer: to, payload: SignalPayload::Offer("v=0".into()) }
}

fn from(peer: WorkerId, payload: SignalPayload) -> CoordinatorMessage {
    CoordinatorMessage::Signal(Signal { peer, payload })
}

#[test]
fn a_worker_is_told_the_nearest_holders_but_never_itself() {
    let mut n = Net::new();
    for (w, origin) in [(1, Some(7)), (2, Some(8)), (3, Some(7)), (4, None), (5, Some(8)), (6, Some(8))] {
        n.join(w, origin);
    }
    let blob = Sha256Hash([9; 32]);
    for w in [2, 3, 4, 5, 6, 1] {
        n.hold(w, &[blob]);
    }
    let s = n.peers.want(1, blob);
    assert_eq!(s.blob, blob);
    assert_eq!(s.peers.len(), SOURCES);
    assert_eq!(s.peers[0], 3, "the holder on its own network first");
    assert!(!s.peers.contains(&1));
    assert!(n.peers.want(1, Sha256Hash([0; 32])).peers.is_empty(), "nobody holds it: fetch it over HTTP");
    n.peers.leave(3);
    assert!(!n.peers.want(1, blob).peers.contains(&3), "a worker that left holds nothing");
}

#[test]
fn signals_pass_between_introduced_workers_only() {
    let mut n = Net::with_holder(3);
    assert_eq!(n.peers.want(1, Sha256Hash([9; 32])).peers, vec![2]);
    n.relay(1, offer(2));
    assert_eq!(n.inbox(2), vec![from(1, SignalPayload::Offer("v=0".into()))], "the recipient learns who sent it");
    n.relay(2, Signal { peer: 1, payload: SignalPayload::Answer("a".into()) });
    assert_eq!(n.inbox(1), vec![from(2, SignalPayload::Answer("a".into()))], "either side may signal");
    // Worker 3 was introduced to nobody: it is told the peer is closed, and 2 hears nothing.
    n.relay(3, offer(2));
    assert_eq!(n.inbox(3), vec![from(2, SignalPayload::Close)]);
    assert!(n.inbox(2).is_empty());
    assert_eq!((n.peers.stats.relayed, n.peers.stats.refused), (2, 1));
    // Closing ends the introduction.
    n.relay(1, Signal { peer: 2, payload: SignalPayload::Close });
    assert_eq!(n.inbox(2), vec![from(1, SignalPayload::Close)]);
    n.relay(1, offer(2));
    assert_eq!(n.inbox(1), vec![from(2, SignalPayload::Close)]);
    assert!(n.inbox(2).is_empty());
}

#[test]
fn an_introduction_carries_a_bounded_number_of_signals() {
    let mut n = Net::with_holder(2);
    n.peers.want(1, Sha256Hash([9; 32]));
    for _ in 0..SIGNALS_PER_INTRODUCTION + 5 {
        n.relay(1, offer(2));
    }
    assert_eq!(n.inbox(2).len(), SIGNALS_PER_INTRODUCTION as usize);
    assert_eq!(n.inbox(1).len(), 5, "each refused signal is answered with Close");
}

#[test]
fn a_worker_that_leaves_closes_its_introductions() {
    let mut n = Net::with_holder(3);
    n.peers.want(1, Sha256Hash([9; 32]));
    n.peers.want(3, Sha256Hash([9; 32]));
    n.peers.leave(2);
    assert_eq!(n.inbox(1), vec![from(2, SignalPayload::Close)]);
    assert_eq!(n.inbox(3), vec![from(2, SignalPayload::Close)]);
    assert_eq!(n.peers.holdings(), (0, 0));
    n.relay(1, offer(2));
    assert_eq!(n.inbox(1), vec![from(2, SignalPayload::Close)], "signals to a worker that left bounce");
}

#[test]
fn holdings_are_bounded() {
    let mut n = Net::new();
    n.join(1, None);
    let blobs: Vec<Sha256Hash> = (0..HELD_PER_WORKER as u32 + 10)
        .map(|i| {
            let mut b = [0; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            Sha256Hash(b)
        })
        .collect();
    n.hold(1, &blobs);
    n.hold(1, &blobs[HELD_PER_WORKER..]);
    assert_eq!(n.peers.holdings(), (HELD_PER_WORKER, 1), "the oldest are forgotten, repeats count once");
    for w in 2..(HOLDERS_PER_BLOB as u64 + 10) {
        n.join(w, None);
        n.hold(w, &[Sha256Hash([0xff; 32])]);
    }
    assert_eq!(n.peers.holders[&Sha256Hash([0xff; 32])].len(), HOLDERS_PER_BLOB);
}

#[test]
fn asking_again_does_not_renew_an_introductions_signals() {
    let mut n = Net::with_holder(2);
    n.peers.want(1, Sha256Hash([9; 32]));
    for _ in 0..SIGNALS_PER_INTRODUCTION {
        n.relay(1, offer(2));
    }
    n.peers.want(1, Sha256Hash([9; 32]));
    n.relay(1, offer(2));
    assert_eq!(n.inbox(2).len(), SIGNALS_PER_INTRODUCTION as usize);
    assert_eq!(n.inbox(1), vec![from(2, SignalPayload::Close)]);
    assert_eq!(n.peers.stats.introductions, 1);
}

#[test]
fn no_worker_sends_or_receives_signals_faster_than_its_rate() {
    let mut n = Net::new();
    let blob = Sha256Hash([9; 32]);
    n.join(1, None);
    // Many holders, each introduced to worker 1: budgets are no limit here.
    for w in 2..40 {
        n.join(w, None);
        n.hold(w, &[blob]);
    }
    let holders: Vec<WorkerId> = (0..13).flat_map(|_| n.peers.want(1, blob).peers).collect();
    let t0 = Instant::now();
    let mut sent = 0;
    for &h in holders.iter().cycle().take(500) {
        n.peers.relay(1, offer(h), t0);
        sent += 1;
    }
    let delivered: usize = (2..40).map(|w| n.inbox(w).len()).sum();
    assert_eq!(delivered, SIGNAL_BURST as usize, "a burst, then nothing ({sent} sent)");
    // Ten seconds later, forty more.
    for &h in holders.iter().cycle().take(500) {
        n.peers.relay(1, offer(h), t0 + std::time::Duration::from_secs(10));
    }
    let later: usize = (2..40).map(|w| n.inbox(w).len()).sum();
    assert_eq!(later, (10.0 * SIGNALS_PER_SECOND) as usize);
}

#[test]
fn only_blobs_a_worker_was_given_peers_for_count_as_fetched_from_peers() {
    let mut n = Net::with_holder(2);
    n.peers.want(1, Sha256Hash([9; 32]));
    n.peers.want(1, Sha256Hash([8; 32]));
    let counted = n.peers.fetched_from_peers(1, &[Sha256Hash([9; 32]), Sha256Hash([9; 32]), Sha256Hash([8; 32]), Sha256Hash([7; 32])]);
    assert_eq!(counted, vec![Sha256Hash([9; 32])], "once, and not what it had no peers for");
    assert!(n.peers.fetched_from_peers(1, &[Sha256Hash([9; 32])]).is_empty());
}

#[test]
fn a_worker_may_say_it_holds_only_what_it_was_given() {
    let mut n = Net::new();
    n.join(1, None);
    n.join(2, None);
    let (given, made_up) = (Sha256Hash([1; 32]), Sha256Hash([2; 32]));
    n.peers.given(1, [given]);
    n.peers.have(1, &[given, made_up]);
    assert_eq!(n.peers.holdings(), (1, 1), "the made-up blob is not listed");
    assert_eq!(n.peers.want(2, made_up).peers, Vec::<WorkerId>::new());
    assert_eq!(n.peers.want(2, given).peers, vec![1]);
    // Asking for a blob is being given it: the asker may offer it next.
    n.peers.have(2, &[made_up]);
    assert_eq!(n.peers.holdings(), (2, 2));
}

#[test]
fn one_network_takes_few_of_a_blobs_holder_places() {
    let mut n = Net::new();
    let blob = Sha256Hash([5; 32]);
    for w in 1..=40 {
        n.join(w, Some(7));
        n.hold(w, &[blob]);
    }
    n.join(100, Some(8));
    n.hold(100, &[blob]);
    n.join(200, Some(9));
    let s = n.peers.want(200, blob);
    assert!(s.peers.contains(&100), "the other network's holder is still named: {:?}", s.peers);
    assert_eq!(n.peers.holders[&blob].len(), HOLDERS_PER_ORIGIN + 1);
}

#[test]
fn a_strangers_signals_cost_the_recipient_nothing() {
    let mut n = Net::with_holder(3);
    // Worker 3 was never introduced to 1: it signals 1 over and over.
    for _ in 0..500 {
        n.relay(3, offer(1));
    }
    assert!(n.inbox(1).is_empty());
    // 1's budget is whole: introduced to 2, it signals its full burst.
    n.peers.want(1, Sha256Hash([9; 32]));
    for _ in 0..SIGNALS_PER_INTRODUCTION {
        n.relay(2, offer(1));
    }
    assert_eq!(n.inbox(1).len(), SIGNALS_PER_INTRODUCTION as usize);
}
