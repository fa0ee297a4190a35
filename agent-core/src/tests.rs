//! The agent driven as a host would drive it: a coordinator's frames in,
//! executors reporting, blobs loading, time passing; every output checked.

use super::*;
use idlecore_protocol::{
    decode_worker, encode_coordinator, encode_worker, Ack, BlobTarget, Cancel, CoordinatorMessage, InputBlob, LeaseId, TaskLimits,
    TaskResult, Welcome,
};

/// A module handle and an input handle, as a host would have them.
type Core = Agent<&'static str, Vec<u8>>;
type Out = Output<&'static str, Vec<u8>>;

fn config(workers: u32) -> Config {
    Config {
        coordinator: "ws://coordinator/ws".into(),
        agent: "test".into(),
        plan: Plan { workers, duty: 1.0 },
        cores: 4,
        prefetch: None,
        module_budget: 1 << 20,
        input_budget: 1 << 20,
        peers: true,
        paused: false,
        seed: 7,
    }
}

/// The agent with its output so far drained into `out`.
struct Host {
    a: Core,
    now: Millis,
    out: Vec<Out>,
}

impl Host {
    fn new(cfg: Config) -> Host {
        let mut h = Host { a: Agent::new(cfg, 1_000), now: 1_000, out: vec![] };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(o) = self.a.poll_output() {
            self.out.push(o);
        }
    }

    fn input(&mut self, i: Input<&'static str, Vec<u8>>) {
        self.a.handle(i, self.now);
        self.drain();
    }

    fn advance(&mut self, ms: Millis) {
        self.now += ms;
        self.a.handle_timeout(self.now);
        self.drain();
    }

    fn take(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// The frames sent since the last look, decoded.
    fn sent(&mut self) -> Vec<WorkerMessage> {
        sent_in(&self.take())
    }

    fn frame(&mut self, conn: u32, msg: CoordinatorMessage) {
        self.input(Input::Frame { conn, frame: encode_coordinator(&msg) });
    }

    /// Opens connection `conn` and welcomes it (heartbeats every second).
    fn welcome(&mut self, conn: u32) {
        self.input(Input::Opened { conn });
        let welcome = Welcome {
            version: 4,
            session: 1,
            heartbeat_ms: 1000,
            blob_path: "/blobs/".into(),
            max_frame: 1 << 24,
            ice_servers: vec![],
            resume: [1; 24],
        };
        self.frame(conn, CoordinatorMessage::Welcome(welcome));
    }

    /// Executors of ids as spawned, ready.
    fn ready_all(&mut self) -> Vec<(usize, u32)> {
        let spawned: Vec<(usize, u32)> =
            self.out.iter().filter_map(|o| if let Output::Spawn { slot, id } = o { Some((*slot, *id)) } else { None }).collect();
        for (_, id) in &spawned {
            self.input(Input::ExecutorReady { id: *id });
        }
        spawned
    }
}

fn hash(n: u8) -> Sha256Hash {
    Sha256Hash([n; 32])
}

fn lease(id: LeaseId, module: u8) -> Lease {
    Lease {
        lease: id,
        job: 1,
        task: id as u32,
        module: hash(module),
        stdin: vec![],
        args: vec![],
        env: vec![],
        limits: TaskLimits { timeout_ms: 5_000, max_output_bytes: 100, max_memory_pages: 16, fuel: 0 },
        seed: 0,
        deterministic: true,
        dirs: vec![],
        blobs: vec![],
    }
}

fn result(lease: LeaseId) -> Vec<u8> {
    encode_worker(&WorkerMessage::Result(TaskResult {
        lease,
        exit_code: 0,
        stdout: b"ok".to_vec(),
        stderr: vec![],
        elapsed_ms: 3,
        fuel_used: 1,
        files: vec![],
    }))
}

fn module_loaded(h: &mut Host, n: u8) {
    h.input(Input::Loaded { hash: hash(n), kind: Kind::Module, result: Ok((Blob::Module("m"), 100, Source::Network)) });
}

/// The frames among `out`, decoded.
fn sent_in(out: &[Out]) -> Vec<WorkerMessage> {
    out.iter().filter_map(|o| if let Output::Send(f) = o { Some(decode_worker(f).unwrap()) } else { None }).collect()
}

fn runs(out: &[Out]) -> Vec<(usize, LeaseId)> {
    out.iter().filter_map(|o| if let Output::Run { slot, lease, .. } = o { Some((*slot, lease.lease)) } else { None }).collect()
}

fn failures(sent: &[WorkerMessage]) -> Vec<(LeaseId, FailureKind)> {
    sent.iter().filter_map(|m| if let WorkerMessage::Failure(f) = m { Some((f.lease, f.kind)) } else { None }).collect()
}

#[test]
fn it_starts_executors_connects_and_offers_them_with_prefetch() {
    let mut h = Host::new(config(2));
    let out = h.take();
    assert!(matches!(out[..], [Output::Spawn { slot: 0, .. }, Output::Spawn { slot: 1, .. }, ..]), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Output::Connect { conn: 1 })));
    assert_eq!(h.a.status().workers, 2);
    assert!((h.a.status().cpu - 0.5).abs() < 1e-9, "two of four cores");
    h.input(Input::Opened { conn: 1 });
    match &h.sent()[..] {
        [WorkerMessage::Hello(hello)] => assert_eq!((hello.slots, hello.agent.as_str()), (4, "test"), "two executors and two prefetched"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lease_loads_its_module_runs_reports_and_is_forgotten_once_acknowledged() {
    let mut h = Host::new(config(1));
    h.ready_all();
    h.welcome(1);
    h.take();
    h.frame(1, CoordinatorMessage::Lease(lease(10, 5)));
    let out = h.take();
    let load = out.iter().find_map(|o| {
        if let Output::Load { hash, kind, blob_path, ask_peers, .. } = o {
            Some((*hash, *kind, blob_path.clone(), *ask_peers))
        } else {
            None
        }
    });
    assert_eq!(load, Some((hash(5), Kind::Module, "/blobs/".into(), true)));
    assert!(runs(&out).is_empty(), "not before its module is here");
    module_loaded(&mut h, 5);
    let out = h.take();
    assert_eq!(runs(&out), [(0, 10)]);
    assert!(
        out.iter().any(|o| matches!(o, Output::Send(f) if matches!(decode_worker(f), Ok(WorkerMessage::Have(_))))),
        "it says it holds the module"
    );
    let id = 1;
    h.input(Input::RunEnded { id, frame: result(10), ran_ms: 40 });
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::Task(t) if t.ok && t.task == 10 && t.elapsed_ms == 3)));
    let sent = sent_in(&out);
    assert!(matches!(&sent[..], [WorkerMessage::Result(r)] if r.lease == 10));
    assert_eq!((h.a.status().tasks_done, h.a.status().running), (1, 0));
    assert!((h.a.status().cpu_seconds - 0.04).abs() < 1e-9);
    // Acknowledged: a reconnect sends nothing again.
    h.frame(1, CoordinatorMessage::Ack(Ack { lease: 10 }));
    h.input(Input::Closed { conn: 1, why: "gone".into() });
    h.advance(1_000);
    h.welcome(2);
    assert!(!h.sent().iter().any(|m| matches!(m, WorkerMessage::Result(_))));
}

#[test]
fn reports_not_acknowledged_are_sent_again_after_reconnecting_with_backoff() {
    let mut h = Host::new(config(1));
    h.ready_all();
    h.welcome(1);
    h.frame(1, CoordinatorMessage::Lease(lease(10, 5)));
    module_loaded(&mut h, 5);
    h.input(Input::Closed { conn: 1, why: "connection closed".into() });
    assert_eq!(h.a.status().state, "disconnected");
    assert_eq!(h.a.status().last_error.as_deref(), Some("connection closed"));
    assert!(h.take().iter().any(|o| matches!(o, Output::SessionEnded)));
    // The run goes on; its report waits for a session.
    h.input(Input::RunEnded { id: 1, frame: result(10), ran_ms: 5 });
    assert!(!h.take().iter().any(|o| matches!(o, Output::Send(_))));
    // Backoff 250 ms with jitter of 0.5 to 1.
    h.advance(124);
    assert!(!h.take().iter().any(|o| matches!(o, Output::Connect { .. })), "not before half the backoff");
    h.advance(126);
    assert!(h.take().iter().any(|o| matches!(o, Output::Connect { conn: 2 })));
    // Events of the old connection are ignored.
    h.input(Input::Closed { conn: 1, why: "late".into() });
    assert_eq!(h.a.status().state, "connecting");
    h.input(Input::Opened { conn: 2 });
    match &h.sent()[..] {
        [WorkerMessage::Hello(hello)] => {
            assert_eq!(hello.slots, 2, "the run carried over has ended");
            assert_eq!(hello.resume, Some([1; 24]), "the new session proves it is the same worker");
        }
        other => panic!("{other:?}"),
    }
    h.frame(
        2,
        CoordinatorMessage::Welcome(Welcome {
            version: 4,
            session: 2,
            heartbeat_ms: 1000,
            blob_path: "/b/".into(),
            max_frame: 1 << 24,
            ice_servers: vec![],
            resume: [2; 24],
        }),
    );
    let sent = h.sent();
    assert!(sent.iter().any(|m| matches!(m, WorkerMessage::Result(r) if r.lease == 10)), "{sent:?}");
    assert_eq!(h.a.blob_path(), Some("/b/"));
    assert_eq!(h.a.status().connects, 2);
}

#[test]
fn the_backoff_doubles_and_resets_on_welcome() {
    let mut h = Host::new(config(1));
    h.take();
    /// Waits for the next `Connect`: its connection, and how long it took.
    fn reconnect(h: &mut Host) -> (u32, Millis) {
        let start = h.now;
        loop {
            h.advance(1);
            if let Some(conn) = h.take().iter().find_map(|o| if let Output::Connect { conn } = o { Some(*conn) } else { None }) {
                return (conn, h.now - start);
            }
            assert!(h.now - start < 60_000, "no reconnect");
        }
    }
    let mut conn = 1;
    for i in 0..4 {
        h.input(Input::Closed { conn, why: "refused".into() });
        let (next, wait) = reconnect(&mut h);
        let base = 250 << i;
        assert!((base / 2..=base).contains(&wait), "wait {i}: {wait} ms of {base}");
        conn = next;
    }
    h.welcome(conn);
    h.input(Input::Closed { conn, why: "x".into() });
    let (_, wait) = reconnect(&mut h);
    assert!(wait <= 250, "back to 250 ms after a Welcome: {wait}");
}

#[test]
fn heartbeats_name_the_leases_held() {
    let mut h = Host::new(config(1));
    h.ready_all();
    h.welcome(1);
    h.frame(1, CoordinatorMessage::Leases(vec![lease(10, 5), lease(11, 5)]));
    module_loaded(&mut h, 5);
    h.take();
    h.advance(999);
    assert!(h.sent().is_empty());
    h.advance(1);
    match &h.sent()[..] {
        [WorkerMessage::Heartbeat(hb)] => {
            let mut leases = hb.leases.clone();
            leases.sort();
            assert_eq!(leases, [10, 11], "the running one and the waiting one");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.a.poll_timeout(), Some(h.now + 1000).min(Some(h.now + 4000)));
}

#[test]
fn leases_past_the_credit_are_given_back_and_cancels_stop_runs() {
    let mut h = Host::new(config(1));
    h.ready_all();
    h.welcome(1);
    h.take();
    h.frame(1, CoordinatorMessage::Leases(vec![lease(1, 5), lease(2, 5), lease(3, 5)]));
    assert_eq!(failures(&h.sent()), [(3, FailureKind::Withdrawn)], "one executor + one prefetched");
    module_loaded(&mut h, 5);
    h.take();
    h.frame(1, CoordinatorMessage::Cancel(Cancel { leases: vec![1] }));
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::Spawn { slot: 0, .. })), "the run's executor is started again: {out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::Send(_))), "a cancelled run reports nothing");
    h.frame(1, CoordinatorMessage::Cancel(Cancel { leases: vec![2, 77] }));
    assert_eq!(h.a.status().queued, 0);
}

#[test]
fn pausing_ends_executors_and_gives_leases_back_then_resuming_offers_again() {
    let mut h = Host::new(config(2));
    h.ready_all();
    h.welcome(1);
    h.frame(1, CoordinatorMessage::Leases(vec![lease(1, 5), lease(2, 5), lease(3, 5)]));
    module_loaded(&mut h, 5);
    h.take();
    h.input(Input::Pause);
    let out = h.take();
    assert_eq!(out.iter().filter(|o| matches!(o, Output::Retire { .. })).count(), 2);
    assert!(out.iter().any(|o| matches!(o, Output::Inactive)));
    let sent = sent_in(&out);
    assert!(matches!(sent[0], WorkerMessage::Capacity(c) if c.slots == 0), "capacity first, so nothing comes back: {sent:?}");
    let mut given_back: Vec<LeaseId> = failures(&sent)
        .iter()
        .map(|(l, k)| {
            assert_eq!(*k, FailureKind::Withdrawn);
            *l
        })
        .collect();
    given_back.sort();
    assert_eq!(given_back, [1, 2, 3]);
    assert_eq!((h.a.status().state, h.a.status().workers), ("paused", 0));
    h.input(Input::Resume);
    let out = h.take();
    assert_eq!(out.iter().filter(|o| matches!(o, Output::Spawn { .. })).count(), 2);
    assert!(out.iter().any(|o| matches!(o, Output::Send(f) if matches!(decode_worker(f), Ok(WorkerMessage::Capacity(c)) if c.slots == 4))));
}

#[test]
fn a_paused_agent_connects_only_to_deliver_reports() {
    let mut h = Host::new(Config { paused: true, ..config(1) });
    let out = h.take();
    assert!(!out.iter().any(|o| matches!(o, Output::Connect { .. } | Output::Spawn { .. })), "{out:?}");
    assert_eq!(h.a.status().state, "paused");
    assert_eq!(h.a.poll_timeout(), None, "nothing to wait for");
}

#[test]
fn a_run_past_its_deadline_fails_and_its_executor_starts_again() {
    let mut h = Host::new(config(1));
    h.ready_all();
    h.welcome(1);
    h.frame(1, CoordinatorMessage::Lease(lease(10, 5)));
    module_loaded(&mut h, 5);
    h.take();
    assert_eq!(h.a.poll_timeout(), Some(h.now + 1000), "the heartbeat comes first");
    h.advance(4_999);
    assert!(failures(&h.sent()).is_empty());
    h.advance(1);
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::Spawn { slot: 0, .. })));
    let sent = sent_in(&out);
    assert_eq!(failures(&sent), [(10, FailureKind::Timeout)]);
    // The old executor's late answer is stale.
    h.input(Input::RunEnded { id: 1, frame: result(10), ran_ms: 5_100 });
    assert!(!h.take().iter().any(|o| matches!(o, Output::Send(_))));
}

#[test]
fn executors_rest_after_a_run_to_keep_the_duty_cycle() {
    let mut h = Host::new(Config { plan: Plan { workers: 1, duty: 0.25 }, ..config(1) });
    h.ready_all();
    h.welcome(1);
    h.frame(1, CoordinatorMessage::Leases(vec![lease(1, 5), lease(2, 5)]));
    module_loaded(&mut h, 5);
    assert_eq!(runs(&h.take()), [(0, 1)]);
    h.input(Input::RunEnded { id: 1, frame: result(1), ran_ms: 100 });
    assert!(runs(&h.take()).is_empty(), "resting: 300 ms for 100 ms of work at 25%");
    h.advance(299);
    assert!(runs(&h.take()).is_empty());
    h.advance(1);
    assert_eq!(runs(&h.take()), [(0, 2)]);
}

#[test]
fn an_executor_that_keeps_failing_is_started_again_after_a_pause() {
    let mut h = Host::new(config(1));
    h.welcome(1);
    h.frame(1, CoordinatorMessage::Lease(lease(10, 5)));
    let mut id = 1;
    for _ in 0..3 {
        h.take();
        h.input(Input::ExecutorFailed { id, why: "script failed".into() });
        let out = h.take();
        id = out.iter().find_map(|o| if let Output::Spawn { id, .. } = o { Some(*id) } else { None }).expect("started again at once");
    }
    h.input(Input::ExecutorFailed { id, why: "script failed".into() });
    let out = h.take();
    assert!(!out.iter().any(|o| matches!(o, Output::Spawn { .. })), "a pause first");
    let sent = sent_in(&out);
    assert_eq!(failures(&sent), [(10, FailureKind::ExecutorCrashed)], "no executor at all: the queued lease goes back");
    assert!(h.a.status().last_error.as_deref().unwrap().contains("trying again in 1000 ms"));
    h.advance(999);
    assert!(!h.take().iter().any(|o| matches!(o, Output::Spawn { .. })));
    h.advance(1);
    assert!(h.take().iter().any(|o| matches!(o, Output::Spawn { slot: 0, .. })));
}

#[test]
fn an_agent_that_can_start_no_executor_stops() {
    let mut h = Host::new(config(2));
    let ids: Vec<u32> = h.take().iter().filter_map(|o| if let Output::Spawn { id, .. } = o { Some(*id) } else { None }).collect();
    h.input(Input::SpawnFailed { id: ids[0], why: "Workers are forbidden".into() });
    assert!(!h.take().iter().any(|o| matches!(o, Output::Fatal(_))), "one is left");
    h.input(Input::SpawnFailed { id: ids[1], why: "Workers are forbidden".into() });
    assert!(h.take().iter().any(|o| matches!(o, Output::Fatal(m) if m.contains("Workers are forbidden"))));
}

#[test]
fn inputs_load_within_their_budget_and_a_lease_whose_blob_fails_fails() {
    let mut h = Host::new(Config { input_budget: 100, ..config(1) });
    h.ready_all();
    h.welcome(1);
    h.take();
    let with_input =
        |id: LeaseId, n: u8, size: u64| Lease { blobs: vec![InputBlob { hash: hash(n), size, target: BlobTarget::Stdin }], ..lease(id, 5) };
    h.frame(1, CoordinatorMessage::Leases(vec![with_input(1, 20, 80), with_input(2, 21, 80)]));
    let loads: Vec<(Sha256Hash, Kind)> =
        h.take().iter().filter_map(|o| if let Output::Load { hash, kind, .. } = o { Some((*hash, *kind)) } else { None }).collect();
    assert_eq!(loads, [(hash(5), Kind::Module), (hash(20), Kind::Input)], "the second input waits: both do not fit");
    module_loaded(&mut h, 5);
    h.input(Input::Loaded { hash: hash(20), kind: Kind::Input, result: Err((FailureKind::InputFetch, "HTTP 404".into())) });
    let out = h.take();
    let sent = sent_in(&out);
    assert_eq!(failures(&sent), [(1, FailureKind::InputFetch)]);
    assert!(
        out.iter().any(|o| matches!(o, Output::Load { hash: h, kind: Kind::Input, .. } if *h == hash(21))),
        "the next lease's input loads now"
    );
}
