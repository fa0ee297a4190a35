//! The evidence for result validation: the real scheduler and validator run
//! one job against simulated honest and cheating workers, and count the
//! wrong results they accepted and the compute they spent.
//!
//! Workers run at one speed, one lease at a time, in random order; each
//! report goes through the same calls as a worker session's
//! (`begin_finish`, `report`, `finish`). Saboteurs return a wrong output on
//! a share of their tasks (`rate`): independent ones each a different wrong
//! output, colluding ones all the same wrong output for a task, cheating on
//! the same tasks. `Patient` saboteurs return right answers until trusted,
//! the attack adaptive trust invites. A banned saboteur comes back as a new
//! worker, so the share of saboteurs stays the same.

use idlecore_coordinator::domain::model::{JobLimits, ResultRecord, TaskInput, TaskStatus};
use idlecore_coordinator::domain::policy::{digest, Policy};
use idlecore_coordinator::domain::scheduler::{task_seed, NewJob, Outcome, Output, Scheduler, ValidationStats, Vote};
use idlecore_coordinator::domain::WorkerId;
use idlecore_protocol::{CoordinatorMessage, Lease, Sha256Hash};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Cheat from the first task.
    Eager,
    /// Answer right until trusted (record at the policy's threshold), then cheat.
    Patient,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tasks: u32,
    pub workers: usize,
    /// Share of workers that are saboteurs.
    pub saboteurs: f64,
    pub collude: bool,
    /// Share of its tasks a saboteur cheats on, once it cheats.
    pub rate: f64,
    pub strategy: Strategy,
    pub policy: Policy,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub tasks: u32,
    /// Tasks whose accepted result is wrong, at the job's end.
    pub accepted_wrong: u32,
    /// Tasks failed because their replicas never agreed.
    pub failed: u32,
    /// Runs the workers completed (every report), per task.
    pub overhead: f64,
    pub banned: u64,
    pub stats: ValidationStats,
}

impl Report {
    pub fn accepted_wrong_rate(&self) -> f64 {
        self.accepted_wrong as f64 / self.tasks.max(1) as f64
    }
}

struct SimWorker {
    id: WorkerId,
    held: Vec<Lease>,
    saboteur: bool,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        task_seed(self.0, 0)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn output(task: u32, wrong: Option<u64>) -> Vec<u8> {
    match wrong {
        None => format!("task {task}: right").into_bytes(),
        Some(w) => format!("task {task}: wrong {w}").into_bytes(),
    }
}

/// Carries out what the scheduler decided, as a coordinator would: leases
/// and cancels reach the simulated workers' queues, voided records are
/// deleted, and a job's end gives its final figures.
fn deliver(
    s: &mut Scheduler,
    inboxes: &mut HashMap<WorkerId, VecDeque<CoordinatorMessage>>,
    stored: &mut HashMap<u32, Vec<u8>>,
    stats: &mut ValidationStats,
) {
    while let Some(out) = s.poll_output() {
        match out {
            Output::Send(worker, msg) => inboxes.entry(worker).or_default().push_back(msg),
            Output::Void { task, .. } => {
                stored.remove(&task);
            }
            Output::JobEnded { checks, .. } => *stats = checks.unwrap_or_default(),
        }
    }
}

/// Runs the job to its end and counts. Time stands still: leases never
/// expire, and workers answer in a random order instead.
pub fn simulate(cfg: &Config) -> anyhow::Result<Report> {
    cfg.policy.validate().map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(cfg.workers >= 2 && cfg.tasks > 0, "need at least 2 workers and 1 task");
    let now = Instant::now();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&cfg.seed.to_le_bytes());
    let mut s = Scheduler::new(1, Duration::from_secs(3600), now).with_key(key);
    let inputs = vec![TaskInput::default(); cfg.tasks as usize];
    let job = NewJob {
        id: 1,
        module: Sha256Hash([0; 32]),
        limits: JobLimits::default(),
        policy: cfg.policy,
        tasks: inputs,
        restored: Default::default(),
    };
    s.add_job(job, now);
    let mut rng = Rng(cfg.seed);
    let saboteurs = (cfg.saboteurs * cfg.workers as f64).round() as usize;
    let mut workers: Vec<SimWorker> = Vec::with_capacity(cfg.workers);
    let join = |s: &mut Scheduler, saboteur: bool| SimWorker { id: s.register_worker(1, None, now), held: vec![], saboteur };
    for i in 0..cfg.workers {
        let w = join(&mut s, i < saboteurs);
        workers.push(w);
    }
    let mut inboxes: HashMap<WorkerId, VecDeque<CoordinatorMessage>> = HashMap::new();
    let mut stored: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut runs: u64 = 0;
    let mut banned = 0;
    let mut stats = ValidationStats::default();
    // Colluders cheat on the same tasks: the decision is the task's, not the worker's.
    let cheats_on = |task: u32, salt: u64| ((task_seed(cfg.seed ^ salt, task) >> 11) as f64 / (1u64 << 53) as f64) < cfg.rate;
    while s.stats().running_jobs > 0 {
        deliver(&mut s, &mut inboxes, &mut stored, &mut stats);
        let mut busy: Vec<usize> = vec![];
        for (i, w) in workers.iter_mut().enumerate() {
            for m in inboxes.entry(w.id).or_default().drain(..) {
                match m {
                    CoordinatorMessage::Lease(l) => w.held.push(l),
                    CoordinatorMessage::Cancel(c) => w.held.retain(|l| !c.leases.contains(&l.lease)),
                    _ => {}
                }
            }
            if !w.held.is_empty() {
                busy.push(i);
            }
        }
        anyhow::ensure!(!busy.is_empty(), "the job stalled: no worker holds a lease ({:?})", s.stats());
        let i = busy[(rng.next() % busy.len() as u64) as usize];
        let w = &mut workers[i];
        let lease = w.held.remove(0);
        runs += 1;
        let cheating = w.saboteur
            && match cfg.strategy {
                Strategy::Eager => true,
                Strategy::Patient => s.record(w.id) >= cfg.policy.trust_threshold,
            };
        let wrong = match (cheating, cfg.collude) {
            (false, _) => None,
            (true, true) => cheats_on(lease.task, 0).then_some(0),
            (true, false) => (rng.unit() < cfg.rate).then(|| rng.next() | 1),
        };
        let out = output(lease.task, wrong);
        let Some(f) = s.begin_finish(w.id, lease.lease, now) else { continue };
        let record = ResultRecord {
            task: f.task,
            status: TaskStatus::Done,
            exit_code: Some(0),
            stdout: out,
            stderr: vec![],
            elapsed_ms: 0,
            fuel_used: 0,
            files: Default::default(),
            error: None,
        };
        let vote = Vote::exact(digest(&record));
        match s.report(f.lease, vote, record, now) {
            Outcome::Accept(r) => {
                stored.insert(f.task, r.stdout);
                s.finish(f.lease, now);
            }
            Outcome::Failed(_) => {
                stored.insert(f.task, b"failed".to_vec());
                s.finish(f.lease, now);
            }
            Outcome::Counted => {}
            Outcome::Recompare(_) => unreachable!("outputs are compared by digest"),
        }
        // What a session would store: reopened tasks lose their record.
        deliver(&mut s, &mut inboxes, &mut stored, &mut stats);
        // Banned saboteurs come back under a new identity.
        for w in workers.iter_mut() {
            if s.is_banned(w.id) {
                banned += 1;
                s.remove_worker(w.id, now);
                inboxes.remove(&w.id);
                *w = join(&mut s, w.saboteur);
            }
        }
    }
    deliver(&mut s, &mut inboxes, &mut stored, &mut stats);
    anyhow::ensure!(stored.len() == cfg.tasks as usize, "{} of {} tasks have a result", stored.len(), cfg.tasks);
    let failed = stored.values().filter(|o| o.as_slice() == b"failed").count() as u32;
    let accepted_wrong = stored.iter().filter(|(t, o)| o.as_slice() != b"failed" && **o != output(**t, None)).count() as u32;
    Ok(Report { tasks: cfg.tasks, accepted_wrong, failed, overhead: runs as f64 / cfg.tasks as f64, banned, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(saboteurs: f64, collude: bool, strategy: Strategy) -> Config {
        Config { tasks: 3000, workers: 30, saboteurs, collude, rate: 1.0, strategy, policy: Policy::default(), seed: 7 }
    }

    #[test]
    fn honest_workers_are_all_accepted_and_trust_cuts_the_cost() {
        let r = simulate(&cfg(0.0, false, Strategy::Eager)).unwrap();
        assert_eq!((r.accepted_wrong, r.failed, r.banned), (0, 0, 0));
        assert!(r.overhead < 1.9, "trusted workers run most tasks alone: {r:?}");
        assert!(r.stats.accepted_alone > 1000, "{r:?}");
    }

    #[test]
    fn without_validation_saboteurs_get_their_wrong_results_in() {
        let r = simulate(&Config { policy: Policy::OFF, ..cfg(0.2, true, Strategy::Eager) }).unwrap();
        assert!(r.accepted_wrong_rate() > 0.1, "{r:?}");
        assert_eq!(r.overhead, 1.0);
    }

    #[test]
    fn colluding_saboteurs_are_caught_and_their_results_verified_again() {
        for strategy in [Strategy::Eager, Strategy::Patient] {
            let r = simulate(&cfg(0.1, true, strategy)).unwrap();
            assert!(r.accepted_wrong_rate() < 0.01, "{strategy:?}: {r:?}");
            assert!(r.stats.disagreements > 0, "{strategy:?}: {r:?}");
        }
    }
}
