//! Result validation through the scheduler: replicas, quorum, trust, spot
//! checks, bans and verifying again.

use super::harness::{outbox, Harness, Inbox};
use super::*;
use crate::domain::model::{ResultRecord, TaskStatus};
use idlecore_protocol::Sha256Hash;

struct W {
    id: WorkerId,
    rx: Inbox,
    held: Vec<Lease>,
}

struct Bench {
    s: Harness,
    workers: Vec<W>,
    /// Accepted output of each (job, task), as stored.
    stored: HashMap<(u64, u32), Vec<u8>>,
    /// The job's final figures, once it completed.
    ended: Option<ValidationStats>,
    /// The job's comparator, if it has one: whether two outputs agree.
    agree: Option<Agree>,
    /// A worker whose every comparison fails (its votes are unsure).
    unsure: Option<usize>,
}

/// A comparator's judgement: whether two outputs agree.
type Agree = fn(&[u8], &[u8]) -> bool;

fn honest(job: u64, task: u32) -> Vec<u8> {
    format!("job {job} task {task}").into_bytes()
}

fn digest(out: &[u8]) -> Sha256Hash {
    let mut d = [0u8; 32];
    for (i, b) in out.iter().enumerate() {
        d[i % 32] = d[i % 32].wrapping_mul(31).wrapping_add(*b);
    }
    d[31] ^= out.len() as u8;
    Sha256Hash(d)
}

impl Bench {
    fn new(policy: Policy, tasks: usize) -> Bench {
        let mut s = Harness::new(5, Duration::from_secs(60));
        let inputs = (0..tasks).map(|i| TaskInput { stdin: vec![i as u8], ..TaskInput::default() }).collect();
        s.add_validated_job(1, [0; 32], JobLimits::default(), policy, inputs, vec![], vec![]);
        Bench { s, workers: vec![], stored: HashMap::new(), ended: None, agree: None, unsure: None }
    }

    /// A job whose outputs are compared by `agree` (standing in for a comparator module).
    fn compared(policy: Policy, tasks: usize, agree: fn(&[u8], &[u8]) -> bool) -> Bench {
        let policy = Policy { comparator: Some(Sha256Hash([9; 32])), ..policy };
        Bench { agree: Some(agree), ..Bench::new(policy, tasks) }
    }

    /// A report's vote, as `comparators::vote` makes it.
    fn vote(&self, lease: LeaseId, out: &[u8]) -> Vote {
        let Some(cmp) = self.s.compare_with(lease) else { return Vote::exact(digest(out)) };
        let agree = self.agree.expect("the job has a comparator");
        let class = cmp.outputs.iter().find(|(_, r)| agree(&r.stdout, out)).map(|(d, _)| *d);
        Vote::compared(class.unwrap_or(digest(out)), &cmp, false)
    }

    fn worker(&mut self, slots: u32, origin: Option<u64>) -> usize {
        let (tx, rx) = outbox();
        let id = self.s.register_worker_from(slots, tx, origin);
        self.workers.push(W { id, rx, held: vec![] });
        self.workers.len() - 1
    }

    fn deliver(&mut self) {
        self.s.drain();
        for w in &mut self.workers {
            while let Ok(m) = w.rx.try_recv() {
                match m {
                    CoordinatorMessage::Lease(l) => w.held.push(l),
                    CoordinatorMessage::Cancel(c) => w.held.retain(|l| !c.leases.contains(&l.lease)),
                    _ => {}
                }
            }
        }
    }

    /// Worker `wi` reports its oldest lease with `output` (the honest one if `None`).
    /// Returns false if it held none.
    fn run(&mut self, wi: usize, output: Option<Vec<u8>>) -> bool {
        self.deliver();
        if self.workers[wi].held.is_empty() {
            return false;
        }
        let lease = self.workers[wi].held.remove(0);
        let out = output.unwrap_or_else(|| honest(lease.job, lease.task));
        let Some(f) = self.s.begin_finish(self.workers[wi].id, lease.lease) else { return true };
        let record = ResultRecord {
            task: f.task,
            status: TaskStatus::Done,
            exit_code: Some(0),
            stdout: out.clone(),
            stderr: vec![],
            elapsed_ms: 1,
            fuel_used: 0,
            files: Default::default(),
            error: None,
        };
        let vote = Vote { unsure: self.unsure == Some(wi), ..self.vote(f.lease, &out) };
        match self.s.report(f.lease, vote, record) {
            Outcome::Accept(r) => {
                self.stored.insert((f.job, f.task), r.stdout);
                self.s.finish(f.lease);
            }
            Outcome::Failed(_) => {
                self.stored.insert((f.job, f.task), b"failed".to_vec());
                self.s.finish(f.lease);
            }
            Outcome::Counted => {}
            Outcome::Recompare(_) => panic!("compared with every earlier output"),
        }
        for key in self.s.take_reopened() {
            self.stored.remove(&key);
        }
        if let Some((_, st)) = self.s.take_ended().pop() {
            self.ended = st;
        }
        self.deliver();
        true
    }

    fn held(&mut self, wi: usize) -> Vec<Lease> {
        self.deliver();
        self.workers[wi].held.clone()
    }

    fn stats(&self) -> ValidationStats {
        self.s.validation(1).map(|(_, s)| s).or(self.ended).unwrap_or_default()
    }
}

fn replicated(k: u32) -> Policy {
    Policy { replicas: k, max_replicas: 4, trust_threshold: 10, spot_checks: 0.0, comparator: None }
}

#[test]
fn a_task_is_accepted_when_two_workers_agree_and_not_before() {
    let mut b = Bench::new(replicated(2), 1);
    let a = b.worker(2, None);
    assert_eq!(b.held(a).len(), 1, "one worker never gets two replicas of a task");
    assert!(b.run(a, None));
    assert!(b.stored.is_empty(), "one result of two wanted decides nothing");
    let c = b.worker(1, None);
    assert_eq!(b.held(c).len(), 1, "the second replica goes to the second worker");
    b.run(c, None);
    assert_eq!(b.stored[&(1, 0)], honest(1, 0));
    assert_eq!(b.s.stats().running_jobs, 0);
    assert_eq!((b.s.record(b.workers[a].id), b.s.record(b.workers[c].id)), (1, 1), "both verified");
}

#[test]
fn one_origin_never_holds_two_replicas_of_a_task() {
    let mut b = Bench::new(replicated(2), 1);
    let a = b.worker(1, Some(7));
    let same = b.worker(1, Some(7));
    assert_eq!(b.held(a).len() + b.held(same).len(), 1, "the replica waits for another origin");
    let other = b.worker(1, Some(8));
    assert_eq!(b.held(other).len(), 1);
}

#[test]
fn disagreement_asks_for_another_replica_and_the_majority_wins() {
    let mut b = Bench::new(replicated(2), 1);
    let liar = b.worker(1, None);
    let h1 = b.worker(1, None);
    b.run(liar, Some(b"forty-two".to_vec()));
    b.run(h1, None);
    assert!(b.stored.is_empty(), "1:1 is no majority");
    assert_eq!(b.stats().disagreements, 1);
    assert!(b.held(liar).is_empty(), "a third replica never goes to a worker that had one");
    let h2 = b.worker(1, None);
    b.run(h2, None);
    assert_eq!(b.stored[&(1, 0)], honest(1, 0));
    assert_eq!(b.s.record(b.workers[liar].id), 0);
    assert_eq!(b.s.record(b.workers[h1].id), 1);
}

#[test]
fn replicas_that_never_agree_fail_the_task_at_the_maximum() {
    let policy = Policy { replicas: 2, max_replicas: 3, trust_threshold: 10, spot_checks: 0.0, comparator: None };
    let mut b = Bench::new(policy, 1);
    for i in 0..3 {
        let w = b.worker(1, None);
        b.run(w, Some(vec![i]));
    }
    assert_eq!(b.stored[&(1, 0)], b"failed");
    assert_eq!(b.stats().inconclusive, 1);
}

/// Runs every lease the workers hold, honestly, round robin, until none is left.
fn run_all(b: &mut Bench) {
    while (0..b.workers.len()).any(|w| !b.held(w).is_empty()) {
        for w in 0..b.workers.len() {
            b.run(w, None);
        }
    }
}

#[test]
fn trusted_workers_get_unreplicated_work_one_time_in_record() {
    let policy = Policy { replicas: 2, max_replicas: 4, trust_threshold: 10, spot_checks: 0.0, comparator: None };
    let mut b = Bench::new(policy, 4000);
    b.worker(1, None);
    b.worker(1, None);
    run_all(&mut b);
    let st = b.stats();
    assert_eq!(b.stored.len(), 4000);
    // Records grow only with verified results, so about sqrt(2 * replicated
    // tasks): the share replicated falls as they grow, and no work is
    // unreplicated before the threshold.
    let replicated = 4000 - st.accepted_alone;
    assert!(st.accepted_alone > 2500, "{st:?}");
    assert!(replicated >= 10, "{st:?}");
    let records: Vec<u32> = b.workers.iter().map(|w| b.s.record(w.id)).collect();
    assert!(records.iter().all(|r| *r as u64 >= replicated * 9 / 10), "{records:?} after {replicated} replicated");
    // One result per task, two per replicated one, and one more for each
    // task taken alone and verified at the end (its first vote still counts).
    assert_eq!(st.results, 4000 + replicated + st.reverified, "{st:?}");
    assert!(st.reverified < 4000 / 5, "{st:?}");
}

#[test]
fn a_wrong_spot_check_answer_bans_and_everything_it_vouched_for_is_verified_again() {
    // Spot checks only: every result is taken alone, and checked by known answers.
    let policy = Policy { replicas: 1, max_replicas: 4, trust_threshold: 10, spot_checks: 1.0, comparator: None };
    let mut b = Bench::new(policy, 300);
    let h1 = b.worker(1, None);
    let h2 = b.worker(1, None);
    let cheat = b.worker(1, None);
    // The first tasks, until a quorum gives a known answer, come from honest runs.
    let mut cheated = 0;
    for _ in 0..400 {
        if b.s.is_banned(b.workers[cheat].id) {
            break;
        }
        b.run(h1, None);
        b.run(h2, None);
        let lease = b.held(cheat).first().cloned();
        if let Some(l) = lease {
            cheated += 1;
            b.run(cheat, Some(format!("wrong {}", l.task).into_bytes()));
        }
    }
    assert!(b.s.is_banned(b.workers[cheat].id), "caught after {cheated} wrong results: {:?}", b.stats());
    assert!(b.held(cheat).is_empty(), "a banned worker holds nothing");
    run_all(&mut b);
    assert_eq!(b.s.stats().running_jobs, 0, "{:?}", b.stats());
    for t in 0..300 {
        assert_eq!(b.stored[&(1, t)], honest(1, t), "task {t}");
    }
    let st = b.stats();
    assert!(st.spot_failures >= 1 && st.banned == 1 && st.reverified >= 1, "{st:?}");
}

#[test]
fn results_taken_alone_from_unverified_workers_are_verified_before_the_job_completes() {
    let policy = Policy { replicas: 1, max_replicas: 3, trust_threshold: 10, spot_checks: 0.01, comparator: None };
    let mut b = Bench::new(policy, 3);
    let cheat = b.worker(3, None);
    for _ in 0..3 {
        b.run(cheat, Some(b"wrong".to_vec()));
    }
    assert_eq!(b.s.stats().running_jobs, 1, "not complete on unverified results");
    assert!(b.stored.is_empty(), "their records are void");
    b.worker(3, None);
    b.worker(3, None);
    run_all(&mut b);
    assert_eq!(b.s.stats().running_jobs, 0);
    for t in 0..3 {
        assert_eq!(b.stored[&(1, t)], honest(1, t));
    }
}

#[test]
fn a_banned_workers_pending_votes_no_longer_count() {
    let policy = Policy { replicas: 3, max_replicas: 3, trust_threshold: 10, spot_checks: 0.0, comparator: None };
    let mut b = Bench::new(policy, 1);
    let cheat = b.worker(1, None);
    let ally = b.worker(1, None);
    b.run(cheat, Some(b"wrong".to_vec()));
    let id = b.workers[cheat].id;
    b.s.ban(1, id);
    b.run(ally, Some(b"wrong".to_vec()));
    assert!(b.stored.is_empty(), "two wrong votes, but one is struck");
    let h1 = b.worker(1, None);
    let h2 = b.worker(1, None);
    b.run(h1, None);
    b.run(h2, None);
    assert_eq!(b.stored[&(1, 0)], honest(1, 0));
}

#[test]
fn a_replica_given_back_unrun_can_go_to_the_same_worker_again() {
    let mut b = Bench::new(replicated(2), 1);
    let w1 = b.worker(1, None);
    let w2 = b.worker(1, None);
    let (l1, l2) = (b.held(w1)[0].clone(), b.held(w2)[0].clone());
    // The first worker pauses and gives its replica back: no one else may take it.
    let f = b.s.begin_finish(b.workers[w1].id, l1.lease).unwrap();
    b.s.withdrawn(f.lease);
    b.workers[w1].held.clear();
    assert_eq!(b.held(w1).len(), 1, "the worker that gave it back runs it after all");
    assert_eq!(b.held(w2)[0].lease, l2.lease);
    b.run(w1, None);
    b.run(w2, None);
    assert_eq!(b.stored[&(1, 0)], honest(1, 0));
}

#[test]
fn a_replica_reporting_while_the_accepted_record_is_stored_changes_nothing() {
    let mut b = Bench::new(Policy { replicas: 3, max_replicas: 3, trust_threshold: 10, spot_checks: 0.0, comparator: None }, 1);
    let ws: Vec<usize> = (0..3).map(|_| b.worker(1, None)).collect();
    let report = |b: &mut Bench, w: usize, out: &[u8]| {
        let l = b.held(w)[0].clone();
        let f = b.s.begin_finish(b.workers[w].id, l.lease).unwrap();
        let record = ResultRecord { stdout: out.to_vec(), ..ResultRecord::failed(0, String::new()) };
        (f, b.s.report(f.lease, Vote::exact(digest(out)), record))
    };
    let (_, first) = report(&mut b, ws[0], b"right");
    assert_eq!(first, Outcome::Counted);
    let (f, second) = report(&mut b, ws[1], b"right");
    assert!(matches!(second, Outcome::Accept(_)), "two of three agree");
    // The third reports while the accepted record is being stored.
    let (_, late) = report(&mut b, ws[2], b"wrong");
    assert_eq!(late, Outcome::Counted, "a late replica neither decides again nor counts as outvoted");
    assert!(b.s.finish(f.lease));
    let st = b.ended.or_else(|| b.s.take_ended().pop().and_then(|(_, s)| s)).unwrap();
    assert_eq!((st.results, st.disagreements), (3, 0), "its run is counted as spent, not as a vote: {st:?}");
    assert_eq!(b.s.record(b.workers[ws[2]].id), 0);
}

/// Agree when equal up to a `~` (what follows it is noise, like the last
/// digits of a floating-point sum).
fn up_to_tilde(a: &[u8], b: &[u8]) -> bool {
    let cut = |x: &[u8]| x.split(|c| *c == b'~').next().unwrap_or_default().to_vec();
    cut(a) == cut(b)
}

fn noisy(task: u32, noise: usize) -> Option<Vec<u8>> {
    Some([honest(1, task), format!("~{noise}").into_bytes()].concat())
}

#[test]
fn outputs_a_comparator_calls_equal_agree_and_the_first_is_kept() {
    let mut b = Bench::compared(replicated(2), 1, up_to_tilde);
    let (w1, w2) = (b.worker(1, None), b.worker(1, None));
    b.run(w1, noisy(0, 1));
    b.run(w2, noisy(0, 2));
    assert_eq!(b.stored[&(1, 0)], noisy(0, 1).unwrap(), "accepted: the first output of the class");
    assert_eq!(b.stats().disagreements, 0);
    assert_eq!(b.s.record(b.workers[w2].id), 0, "a job owner's comparator earns no trust in other jobs");

    // The same outputs compared bit for bit never agree.
    let mut exact = Bench::new(replicated(2), 1);
    let (w1, w2) = (exact.worker(1, None), exact.worker(1, None));
    exact.run(w1, noisy(0, 1));
    exact.run(w2, noisy(0, 2));
    assert!(exact.stored.is_empty());
    assert_eq!(exact.stats().disagreements, 1);
}

#[test]
fn a_report_compared_before_another_was_counted_is_compared_again() {
    let mut b = Bench::compared(replicated(2), 1, up_to_tilde);
    let (w1, w2) = (b.worker(1, None), b.worker(1, None));
    let (l1, l2) = (b.held(w1)[0].clone(), b.held(w2)[0].clone());
    let f1 = b.s.begin_finish(b.workers[w1].id, l1.lease).unwrap();
    let f2 = b.s.begin_finish(b.workers[w2].id, l2.lease).unwrap();
    let out = |n| noisy(0, n).unwrap();
    let record = |n| ResultRecord { stdout: out(n), ..ResultRecord::failed(0, String::new()) };
    // Both are compared with nothing; the second is counted first.
    let (v1, v2) = (b.vote(f1.lease, &out(1)), b.vote(f2.lease, &out(2)));
    assert_eq!(b.s.report(f2.lease, v2, record(2)), Outcome::Counted);
    let again = b.s.report(f1.lease, v1, record(1));
    assert_eq!(again, Outcome::Recompare(record(1)), "a new class, but an output came in meanwhile");
    let v1 = b.vote(f1.lease, &out(1));
    assert_eq!(v1.digest, digest(&out(2)), "it agrees with the output counted meanwhile");
    assert!(matches!(b.s.report(f1.lease, v1, record(1)), Outcome::Accept(r) if r.stdout == out(2)));
}

/// Three honest workers (each with noise of its own) and a cheat, on a job
/// with a comparator and spot checks; the cheat's comparisons fail if `unsure`.
fn spot_checked(unsure: bool) -> (Bench, usize) {
    let policy = Policy { replicas: 2, max_replicas: 4, trust_threshold: 2, spot_checks: 0.5, comparator: None };
    let mut b = Bench::compared(policy, 300, up_to_tilde);
    let good: Vec<usize> = (0..3).map(|_| b.worker(1, None)).collect();
    let cheat = b.worker(1, None);
    b.unsure = unsure.then_some(cheat);
    let honest_run = |b: &mut Bench, w: usize| {
        let task = b.held(w).first().map(|l| l.task);
        task.is_some_and(|t| b.run(w, noisy(t, w)))
    };
    for _ in 0..400 {
        if b.s.is_banned(b.workers[cheat].id) {
            break;
        }
        for &w in &good {
            honest_run(&mut b, w);
        }
        if let Some(l) = b.held(cheat).first().cloned() {
            b.run(cheat, Some(format!("wrong {}", l.task).into_bytes()));
        }
    }
    while good.iter().fold(false, |any, &w| honest_run(&mut b, w) | any) {}
    (b, cheat)
}

#[test]
fn spot_checks_compare_through_the_comparator_and_a_cheat_is_still_caught() {
    let (b, cheat) = spot_checked(false);
    assert!(b.s.is_banned(b.workers[cheat].id), "{:?}", b.stats());
    assert_eq!(b.s.stats().running_jobs, 0, "{:?}", b.stats());
    for t in 0..300 {
        assert!(up_to_tilde(&b.stored[&(1, t)], &honest(1, t)), "task {t}: {:?}", String::from_utf8_lossy(&b.stored[&(1, t)]));
    }
    let st = b.stats();
    assert!(st.spot_checks > st.spot_failures + 10, "honest noisy answers pass spot checks: {st:?}");
    assert_eq!((st.banned, st.inconclusive), (1, 0), "{st:?}");
}

#[test]
fn a_spot_check_whose_comparison_failed_proves_nothing() {
    let (b, cheat) = spot_checked(true);
    assert!(!b.s.is_banned(b.workers[cheat].id), "{:?}", b.stats());
    assert_eq!(b.stats().spot_failures, 0, "{:?}", b.stats());
}

#[test]
fn an_unvouched_result_keeps_its_vote_through_the_comparator_when_decided_again() {
    let policy = Policy { replicas: 1, max_replicas: 3, trust_threshold: 10, spot_checks: 0.01, comparator: None };
    let mut b = Bench::compared(policy, 3, up_to_tilde);
    let first = b.worker(3, None);
    while let Some(l) = b.held(first).first().cloned() {
        b.run(first, noisy(l.task, 1));
    }
    assert_eq!(b.s.stats().running_jobs, 1, "not complete on unverified results");
    // One more worker is enough: the first one's outputs still count, as
    // the outputs the second one's are compared with.
    let second = b.worker(3, None);
    while let Some(l) = b.held(second).first().cloned() {
        b.run(second, noisy(l.task, 2));
    }
    assert_eq!(b.s.stats().running_jobs, 0, "{:?}", b.stats());
    for t in 0..3 {
        assert_eq!(b.stored[&(1, t)], noisy(t, 1).unwrap(), "the first output of the class");
    }
}

/// Found by the scheduler's property test: an audit's spot check aimed at a
/// worker that pauses is dropped; if its task is being decided again
/// meanwhile, the unit must not come back as an extra replica (which
/// placement does not know of, so one worker could hold two of the task).
#[test]
fn a_dropped_audit_spot_check_of_a_reopened_task_does_not_become_a_second_replica() {
    let policy = Policy { replicas: 2, max_replicas: 4, trust_threshold: 10, spot_checks: 0.0, comparator: None };
    let mut b = Bench::new(policy, 2);
    let a = b.worker(1, None);
    let w = b.worker(1, None);
    b.deliver();
    // A and W agree on task 0 with A trusted: a known answer.
    for _ in 0..10 {
        b.s.trust.book.valid(&b.workers[a].id);
    }
    assert!(b.run(a, None) && b.run(w, None));
    let known = b.s.jobs[&1].checks.as_ref().unwrap().known[0].clone();
    // The audit aims a spot check of task 0 at a third worker, which takes it.
    let t = b.worker(1, None);
    let tid = b.workers[t].id;
    b.s.jobs.get_mut(&1).unwrap().checks.as_mut().unwrap().auditing.insert(tid);
    b.s.add_spot(1, known, Some(tid));
    b.s.pump();
    assert_eq!(b.held(t).len(), 1, "the aimed spot check is leased");
    // Task 0 is decided again (A's acceptance is suspect): new replicas queued.
    let va = b.s.workers[&b.workers[a].id].voter;
    assert!(b.s.reopen(1, 0, va, None));
    b.s.set_capacity(b.workers[w].id, 0);
    // The audited worker pauses: its aimed spot check is dropped.
    b.s.set_capacity(tid, 0);
    // A new worker with three slots takes what is ready: one replica of task 0 at most.
    let y = b.worker(3, None);
    let yid = b.workers[y].id;
    let job = &b.s.jobs[&1];
    let checks = job.checks.as_ref().unwrap();
    let mut tasks: Vec<u32> =
        b.s.leases.values().filter(|l| l.voter.worker == yid && !checks.is_spot(l.unit)).map(|l| job.units[l.unit as usize]).collect();
    let n = tasks.len();
    tasks.sort_unstable();
    tasks.dedup();
    assert_eq!(tasks.len(), n, "two live replicas of a task on one worker");
}
