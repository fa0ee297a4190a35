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

use crate::model::{JobLimits, ResultRecord, TaskInput, TaskStatus};
use crate::scheduler::{task_seed, Outcome, Scheduler, Vote, WorkerId};
use crate::validate::quorum::Digest;
use crate::validate::Policy;
use idlecore_protocol::{CoordinatorMessage, Lease};
use std::collections::HashMap;
use std::time::Duration;
use crate::outbox::{outbox, Inbox};

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
    pub stats: crate::scheduler::ValidationStats,
}

impl Report {
    pub fn accepted_wrong_rate(&self) -> f64 {
        self.accepted_wrong as f64 / self.tasks.max(1) as f64
    }
}

struct SimWorker {
    id: WorkerId,
    rx: Inbox,
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

/// Runs the job to its end and counts.
pub fn simulate(cfg: &Config) -> anyhow::Result<Report> {
    cfg.policy.validate().map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(cfg.workers >= 2 && cfg.tasks > 0, "need at least 2 workers and 1 task");
    let mut s = Scheduler::new(1, Duration::from_secs(3600)).with_key(cfg.seed);
    let inputs = vec![TaskInput::default(); cfg.tasks as usize];
    s.add_validated_job(1, [0; 32], JobLimits::default(), cfg.policy, inputs, vec![], vec![]);
    let mut rng = Rng(cfg.seed);
    let saboteurs = (cfg.saboteurs * cfg.workers as f64).round() as usize;
    let mut workers: Vec<SimWorker> = Vec::with_capacity(cfg.workers);
    let join = |s: &mut Scheduler, saboteur: bool| {
        let (tx, rx) = outbox();
        SimWorker { id: s.register_worker(1, tx), rx, held: vec![], saboteur }
    };
    for i in 0..cfg.workers {
        let w = join(&mut s, i < saboteurs);
        workers.push(w);
    }
    let mut stored: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut runs: u64 = 0;
    let mut banned = 0;
    let mut stats = Default::default();
    // Colluders cheat on the same tasks: the decision is the task's, not the worker's.
    let cheats_on = |task: u32, salt: u64| ((task_seed(cfg.seed ^ salt, task) >> 11) as f64 / (1u64 << 53) as f64) < cfg.rate;
    while s.stats().running_jobs > 0 {
        let mut busy: Vec<usize> = vec![];
        for (i, w) in workers.iter_mut().enumerate() {
            while let Ok(m) = w.rx.try_recv() {
                match m {
                    CoordinatorMessage::Lease(l) => w.held.push(l),
                    CoordinatorMessage::Cancel(c) => w.held.retain(|l| l.lease != c.lease),
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
        let Some(f) = s.begin_finish(w.id, lease.lease) else { continue };
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
        let digest: Digest = crate::validate::digest(&record);
        match s.report(f.lease, Vote::exact(digest), record) {
            Outcome::Accept(r) => {
                stored.insert(f.task, r.stdout);
                s.finish(f.lease);
            }
            Outcome::Failed(_) => {
                stored.insert(f.task, b"failed".to_vec());
                s.finish(f.lease);
            }
            Outcome::Counted => {}
            Outcome::Recompare(_) => unreachable!("outputs are compared by digest"),
        }
        // Banned saboteurs come back under a new identity.
        for w in workers.iter_mut() {
            if s.is_banned(w.id) {
                banned += 1;
                s.remove_worker(w.id);
                *w = join(&mut s, w.saboteur);
            }
        }
        // What a session would store: reopened tasks lose their record.
        for (_, task) in s.take_reopened() {
            stored.remove(&task);
        }
        if let Some((_, Some(st))) = s.take_ended().pop() {
            stats = st;
        }
    }
    anyhow::ensure!(stored.len() == cfg.tasks as usize, "{} of {} tasks have a result", stored.len(), cfg.tasks);
    let failed = stored.values().filter(|o| o.as_slice() == b"failed").count() as u32;
    let accepted_wrong = stored.iter().filter(|(t, o)| o.as_slice() != b"failed" && **o != output(**t, None)).count() as u32;
    Ok(Report {
        tasks: cfg.tasks,
        accepted_wrong,
        failed,
        overhead: runs as f64 / cfg.tasks as f64,
        banned,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(saboteurs: f64, collude: bool, strategy: Strategy) -> Config {
        Config {
            tasks: 3000,
            workers: 30,
            saboteurs,
            collude,
            rate: 1.0,
            strategy,
            policy: Policy::default(),
            seed: 7,
        }
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
