use super::harness::{outbox, Harness, Inbox};
use super::*;

fn tasks(n: usize) -> Vec<TaskInput> {
    (0..n).map(|i| TaskInput { stdin: vec![i as u8], ..TaskInput::default() }).collect()
}

fn leases(rx: &mut Inbox) -> Vec<Lease> {
    let mut out = vec![];
    while let Ok(m) = rx.try_recv() {
        if let CoordinatorMessage::Lease(l) = m {
            out.push(l);
        }
    }
    out
}

fn sched() -> Harness {
    Harness::new(7, Duration::from_secs(30))
}

#[test]
fn never_sends_more_than_the_advertised_slots() {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(10), vec![], vec![]);
    let (tx, mut rx) = outbox();
    let w = s.register_worker(3, tx);
    let first = leases(&mut rx);
    assert_eq!(first.len(), 3);
    let f = s.begin_finish(w, first[0].lease).unwrap();
    assert!(!s.finish(f.lease));
    assert_eq!(leases(&mut rx).len(), 1, "one freed slot, one new lease");
    assert_eq!(s.stats().leases, 3);
}

#[test]
fn tasks_spread_across_workers() {
    let mut s = sched();
    let (tx1, mut rx1) = outbox();
    let (tx2, mut rx2) = outbox();
    s.register_worker(2, tx1);
    s.register_worker(2, tx2);
    s.add_job(1, [0; 32], JobLimits::default(), tasks(3), vec![], vec![]);
    let (a, b) = (leases(&mut rx1), leases(&mut rx2));
    assert_eq!(a.len() + b.len(), 3);
    assert!(!a.is_empty() && !b.is_empty());
}

/// A one-task job whose first worker (`w1`) left holding `old`: the task was
/// leased again (`new`) to a second worker (`w2`).
struct ReLeased {
    s: Harness,
    w1: WorkerId,
    old: Lease,
    w2: WorkerId,
    rx2: Inbox,
    new: Lease,
}

fn re_leased() -> ReLeased {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(1), vec![], vec![]);
    let (tx1, mut rx1) = outbox();
    let w1 = s.register_worker(1, tx1);
    let old = leases(&mut rx1).pop().unwrap();
    assert_eq!(s.remove_worker(w1), 1, "its lease is requeued");
    let (tx2, mut rx2) = outbox();
    let w2 = s.register_worker(1, tx2);
    let new = leases(&mut rx2).pop().unwrap();
    ReLeased { s, w1, old, w2, rx2, new }
}

#[test]
fn disconnect_requeues_and_stale_results_are_refused() {
    let ReLeased { mut s, w1, old, w2, new, .. } = re_leased();
    assert_eq!((new.job, new.task), (old.job, old.task));
    assert_ne!(new.lease, old.lease);
    assert!(s.begin_finish(w1, new.lease).is_none(), "a session that has ended reports nothing");
    assert!(s.begin_finish(w2, 12345).is_none(), "a lease never issued");
    let f = s.begin_finish(w2, new.lease).unwrap();
    assert!(s.begin_finish(w2, new.lease).is_none(), "a duplicate report is refused");
    assert!(s.finish(f.lease), "the only task finished the job");
    assert!(s.begin_finish(w2, old.lease).is_none(), "the old attempt is fenced off once its task is done");
    assert_eq!(s.stats().running_jobs, 0);
}

#[test]
fn a_result_that_finished_while_disconnected_still_counts() {
    let ReLeased { mut s, w1, old, w2, mut rx2, new, .. } = re_leased();
    // The first worker reconnects (proving it is the same worker) and reports its old attempt.
    let (tx3, _rx3) = outbox();
    let w3 = w1;
    s.resume_worker(w1, 1, tx3);
    let f = s.begin_finish(w3, old.lease).expect("the orphaned attempt is still current");
    assert_eq!((f.job, f.task), (old.job, old.task));
    let cancelled: Vec<_> = std::iter::from_fn(|| rx2.try_recv().ok()).collect();
    assert!(
        cancelled.iter().any(|m| matches!(m, CoordinatorMessage::Cancel(c) if c.leases.contains(&new.lease))),
        "the newer attempt is cancelled: {cancelled:?}"
    );
    assert!(s.begin_finish(w3, old.lease).is_none(), "reported once");
    assert!(s.begin_finish(w2, new.lease).is_none(), "the cancelled attempt's report is refused");
    assert!(s.finish(f.lease));
    assert_eq!(s.stats().leases, 0);
}

#[test]
fn an_orphan_loses_to_a_report_already_being_stored() {
    let ReLeased { mut s, old, w2, new, .. } = re_leased();
    let f = s.begin_finish(w2, new.lease).unwrap();
    assert!(s.begin_finish(w2, old.lease).is_none());
    assert!(s.finish(f.lease));
}

#[test]
fn expired_leases_are_cancelled_and_requeued() {
    let mut s = Harness::new(1, Duration::from_millis(10));
    s.add_job(1, [0; 32], JobLimits::default(), tasks(2), vec![], vec![]);
    let (tx, mut rx) = outbox();
    let w = s.register_worker(2, tx);
    let ls = leases(&mut rx);
    s.heartbeat(w, &[ls[0].lease]);
    let later = Instant::now() + Duration::from_secs(1);
    assert_eq!(s.expire(later), 2);
    let msgs: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let cancels = msgs.iter().filter(|m| matches!(m, CoordinatorMessage::Cancel(_))).count();
    let relet = msgs.iter().filter(|m| matches!(m, CoordinatorMessage::Lease(_))).count();
    assert_eq!((cancels, relet), (2, 2));
}

#[test]
fn finishing_leases_do_not_expire() {
    let mut s = Harness::new(1, Duration::from_millis(10));
    s.add_job(1, [0; 32], JobLimits::default(), tasks(1), vec![], vec![]);
    let (tx, mut rx) = outbox();
    let w = s.register_worker(1, tx);
    let l = leases(&mut rx).pop().unwrap();
    s.begin_finish(w, l.lease).unwrap();
    assert_eq!(s.expire(Instant::now() + Duration::from_secs(1)), 0);
    assert!(s.finish(l.lease));
}

#[test]
fn retries_count_only_task_failures() {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(1), vec![], vec![]);
    let (tx, mut rx) = outbox();
    let w = s.register_worker(1, tx);
    let l = leases(&mut rx).pop().unwrap();
    let f = s.begin_finish(w, l.lease).unwrap();
    assert_eq!(f.failures, 0);
    s.retry(l.lease, true);
    let l = leases(&mut rx).pop().unwrap();
    s.begin_finish(w, l.lease).unwrap();
    s.retry(l.lease, false);
    let l = leases(&mut rx).pop().unwrap();
    assert_eq!(s.begin_finish(w, l.lease).unwrap().failures, 1);
    assert!(counts_against_task(FailureKind::Trap));
    assert!(!counts_against_task(FailureKind::ExecutorCrashed));
}

#[test]
fn cancel_drops_queued_and_running_tasks() {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(5), vec![], vec![]);
    s.add_job(2, [1; 32], JobLimits::default(), tasks(1), vec![], vec![]);
    let (tx, mut rx) = outbox();
    s.register_worker(2, tx);
    assert_eq!(leases(&mut rx).len(), 2);
    assert!(s.cancel_job(1));
    let msgs: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(msgs.iter().filter(|m| matches!(m, CoordinatorMessage::Cancel(_))).count(), 2);
    let next: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            CoordinatorMessage::Lease(l) => Some(l.job),
            _ => None,
        })
        .collect();
    assert_eq!(next, vec![2], "only the other job's task is leased");
    assert!(!s.cancel_job(1));
}

#[test]
fn finished_tasks_from_the_store_are_not_rerun() {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(4), vec![true, false, true], vec![0, 2]);
    let (tx, mut rx) = outbox();
    s.register_worker(8, tx);
    let mut got: Vec<u32> = leases(&mut rx).iter().map(|l| l.task).collect();
    got.sort();
    assert_eq!(got, vec![1, 3]);
}

#[test]
fn seeds_are_stable_and_distinct() {
    assert_eq!(task_seed(1, 2), task_seed(1, 2));
    assert_ne!(task_seed(1, 2), task_seed(1, 3));
    assert_ne!(task_seed(1, 2), task_seed(2, 2));
}

#[test]
fn idle_workers_do_not_grow_the_hungry_queue() {
    let mut s = sched();
    let (tx, mut rx) = outbox();
    let w = s.register_worker(1, tx);
    for job in 0..100 {
        s.add_job(job, [0; 32], JobLimits::default(), tasks(1), vec![], vec![]);
        let l = leases(&mut rx).pop().unwrap();
        s.begin_finish(w, l.lease).unwrap();
        s.finish(l.lease);
    }
    assert!(s.hungry.len() <= 1);
}

/// Two one-slot workers and a two-task job: the first worker's task is still
/// running (`slow`) when the second worker has finished its own and asks for
/// more, so a speculative second attempt of `slow` (`second`) goes to it.
struct Straggler {
    s: Harness,
    w1: WorkerId,
    w2: WorkerId,
    rx1: Inbox,
    slow: Lease,
    second: Lease,
}

fn straggler() -> Straggler {
    let mut s = Harness::new(1, Duration::from_millis(10));
    s.add_job(1, [0; 32], JobLimits::default(), tasks(2), vec![], vec![]);
    let (tx1, mut rx1) = outbox();
    let w1 = s.register_worker(1, tx1);
    let (tx2, mut rx2) = outbox();
    let w2 = s.register_worker(1, tx2);
    let slow = leases(&mut rx1).pop().unwrap();
    let quick = leases(&mut rx2).pop().unwrap();
    assert_eq!(s.speculate(Instant::now() + Duration::from_secs(60)), 0, "no task of the job has finished yet");
    let f = s.begin_finish(w2, quick.lease).unwrap();
    s.finish(f.lease);
    assert_eq!(s.speculate(Instant::now()), 0, "not a straggler yet");
    assert_eq!(s.speculate(Instant::now() + Duration::from_secs(60)), 1);
    let second = leases(&mut rx2).pop().expect("the idle worker gets a second attempt");
    assert_eq!((second.job, second.task), (slow.job, slow.task));
    assert_ne!(second.lease, slow.lease);
    assert_eq!(s.speculate(Instant::now() + Duration::from_secs(60)), 0, "at most two attempts");
    Straggler { s, w1, w2, rx1, slow, second }
}

#[test]
fn a_straggler_gets_a_second_attempt_and_the_first_report_wins() {
    let Straggler { mut s, w1, w2, mut rx1, slow, second } = straggler();
    let f = s.begin_finish(w2, second.lease).unwrap();
    assert!(s.finish(f.lease), "the job is done");
    let cancels: Vec<_> = std::iter::from_fn(|| rx1.try_recv().ok()).collect();
    assert!(
        cancels.iter().any(|m| matches!(m, CoordinatorMessage::Cancel(c) if c.leases.contains(&slow.lease))),
        "the slower attempt is stopped"
    );
    assert!(s.begin_finish(w1, slow.lease).is_none(), "and its late report refused");
    assert_eq!(s.stats().leases, 0);
    assert_eq!(s.heartbeat(w1, &[slow.lease]), vec![slow.lease], "a heartbeat naming it is told to stop");
}

#[test]
fn a_report_arriving_while_the_other_attempt_is_stored_ends_its_own_attempt() {
    let Straggler { mut s, w1, w2, slow, second, .. } = straggler();
    let f = s.begin_finish(w2, second.lease).unwrap();
    assert!(s.begin_finish(w1, slow.lease).is_none());
    assert_eq!(s.stats().leases, 1, "the refused attempt is over; its slot is free");
    // The stored attempt turns out to be a retry: the task runs again.
    s.retry(f.lease, true);
    assert_eq!(s.stats().leases, 1, "leased again at once");
}

#[test]
fn only_the_worker_holding_a_lease_may_report_it() {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(1), vec![], vec![]);
    let (tx1, mut rx1) = outbox();
    let holder = s.register_worker(1, tx1);
    let l = leases(&mut rx1).pop().unwrap();
    let (tx2, _rx2) = outbox();
    let stranger = s.register_worker(1, tx2);
    assert!(s.begin_finish(stranger, l.lease).is_none(), "another worker's report is refused");
    assert_eq!(s.heartbeat(stranger, &[l.lease, 12345]), vec![l.lease, 12345], "the same answer as for an unknown id");
    // The holder's own report is still taken.
    let f = s.begin_finish(holder, l.lease).expect("the holder reports");
    assert!(s.finish(f.lease));
}

#[test]
fn a_worker_that_resumes_goes_on_with_its_leases() {
    let mut s = sched();
    s.add_job(1, [0; 32], JobLimits::default(), tasks(2), vec![], vec![]);
    let (tx1, mut rx1) = outbox();
    let w = s.register_worker(1, tx1);
    let l = leases(&mut rx1).pop().unwrap();
    // The worker reconnected before the coordinator noticed the old session die.
    let (tx2, mut rx2) = outbox();
    s.resume_worker(w, 1, tx2);
    assert_eq!(s.heartbeat(w, &[l.lease]), Vec::<LeaseId>::new(), "still its lease");
    let f = s.begin_finish(w, l.lease).expect("its report is taken");
    assert!(!s.finish(f.lease));
    let next = leases(&mut rx2).pop().expect("the next task goes to its new session");
    // Its session is removed (the lease orphaned); it resumes again.
    s.remove_worker(w);
    let (tx4, _rx4) = outbox();
    let stranger = s.register_worker(0, tx4);
    assert!(s.begin_finish(stranger, next.lease).is_none(), "an orphan is only its worker's");
    let (tx5, _rx5) = outbox();
    s.resume_worker(w, 0, tx5);
    assert_eq!(s.heartbeat(w, &[next.lease]), Vec::<LeaseId>::new(), "its orphan is not cancelled");
    let f = s.begin_finish(w, next.lease).expect("its worker's report of the orphan is taken");
    assert!(s.finish(f.lease));
}

#[test]
fn resume_secrets_prove_a_worker_and_nothing_else() {
    let s = Scheduler::new(9, Duration::from_secs(30), Instant::now()).with_key([3; 32]);
    let secret = s.resume_secret(42);
    assert_eq!(s.resumed_worker(&secret), Some(42));
    let mut forged = secret;
    forged[..8].copy_from_slice(&43u64.to_le_bytes());
    assert_eq!(s.resumed_worker(&forged), None, "another id with the same MAC");
    let mut flipped = secret;
    flipped[23] ^= 1;
    assert_eq!(s.resumed_worker(&flipped), None);
    let other = Scheduler::new(9, Duration::from_secs(30), Instant::now()).with_key([4; 32]);
    assert_eq!(other.resumed_worker(&secret), None, "a secret from before a restart");
}

#[test]
fn lease_ids_are_unique_and_keyed() {
    let ids = |key| {
        let mut s = Harness::new(9, Duration::from_secs(30)).with_key(key);
        s.add_job(1, [0; 32], JobLimits::default(), tasks(200), vec![], vec![]);
        let (tx, mut rx) = outbox();
        s.register_worker(200, tx);
        leases(&mut rx).into_iter().map(|l| l.lease).collect::<Vec<_>>()
    };
    let key = |n: u8| [n; 32];
    let a = ids(key(1));
    assert_eq!(a.iter().collect::<std::collections::HashSet<_>>().len(), 200);
    assert!(a.iter().all(|l| l >> 64 != 0 && l & u64::MAX as u128 != 0), "128 bits, high and low");
    let b = ids(key(2));
    assert_ne!(a, b, "another key, other ids");
    let consecutive = a.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(consecutive < 5, "ids do not count up ({consecutive} consecutive pairs)");
}

#[test]
fn when_one_of_two_attempts_leaves_the_other_carries_on() {
    let Straggler { mut s, w1, w2, second, .. } = straggler();
    s.remove_worker(w1);
    assert_eq!(s.stats().ready, 0, "the task is not queued again: its second attempt runs");
    let f = s.begin_finish(w2, second.lease).unwrap();
    assert!(s.finish(f.lease));
}
