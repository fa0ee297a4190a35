//! Quorum on output digests. A task's replicas each report the SHA-256 of
//! their output; the task's result is accepted once a strict majority of the
//! replicas wanted agree. Disagreement asks for one more replica at a time, up
//! to the job's maximum; past it the task is inconclusive.
//!
//! Replicas of one task go to distinct workers and, where the coordinator can
//! tell, distinct network origins (`can_vote`), so one machine or one network
//! cannot outvote the rest.

use super::WorkerId;
use idlecore_protocol::Sha256Hash;

/// Who produced a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Voter {
    pub worker: WorkerId,
    /// The network origin (e.g. a hash of the client address), when known.
    pub origin: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// More results are needed: `wanted` replicas in all.
    Pending { wanted: u32 },
    /// A strict majority of the replicas wanted agree on `digest`.
    Accepted { digest: Sha256Hash, agreeing: Vec<Voter>, dissenting: Vec<Voter> },
    /// `max_replicas` results and no majority.
    Inconclusive,
}

/// The votes on one task.
#[derive(Debug, Clone)]
pub struct Quorum {
    max: u32,
    wanted: u32,
    votes: Vec<(Voter, Sha256Hash)>,
    decided: bool,
}

impl Quorum {
    /// A task wanting `replicas` results (1 for an unreplicated one), at most `max`.
    pub fn new(replicas: u32, max: u32) -> Quorum {
        let wanted = replicas.max(1);
        Quorum { max: max.max(wanted), wanted, votes: Vec::new(), decided: false }
    }

    pub fn wanted(&self) -> u32 {
        self.wanted
    }

    pub fn votes(&self) -> usize {
        self.votes.len()
    }

    /// Whether the verdict is final (accepted or inconclusive).
    pub fn is_decided(&self) -> bool {
        self.decided
    }

    /// The accepted digest, once there is one.
    pub fn winner(&self) -> Option<Sha256Hash> {
        let best = self.votes.iter().map(|(_, d)| (d, self.votes.iter().filter(|(_, e)| e == d).count())).max_by_key(|&(_, n)| n)?;
        (self.decided && 2 * best.1 as u32 > self.wanted).then_some(*best.0)
    }

    /// Whether this voter may produce a replica of the task: not a worker nor
    /// an origin that already did.
    pub fn can_vote(&self, voter: &Voter) -> bool {
        !self.votes.iter().any(|(v, _)| v.worker == voter.worker || (v.origin.is_some() && v.origin == voter.origin))
    }

    /// Asks for one more replica on top of those wanted (to verify an
    /// unreplicated result again, say); false at the maximum.
    pub fn want_more(&mut self) -> bool {
        if self.decided || self.wanted >= self.max {
            return false;
        }
        self.wanted += 1;
        true
    }

    /// Drops the votes of a worker found untrustworthy; an undecided quorum
    /// then needs others in their place. Returns how many were dropped.
    pub fn strike(&mut self, worker: WorkerId) -> usize {
        if self.decided {
            return 0;
        }
        let before = self.votes.len();
        self.votes.retain(|(v, _)| v.worker != worker);
        before - self.votes.len()
    }

    /// Counts a replica's digest. Votes after a decision, and repeat votes of
    /// a voter, change nothing (the verdict is recomputed as it stands).
    pub fn vote(&mut self, voter: Voter, digest: Sha256Hash) -> Verdict {
        if !self.decided && self.can_vote(&voter) {
            self.votes.push((voter, digest));
        }
        let verdict = self.verdict();
        self.decided = !matches!(verdict, Verdict::Pending { .. });
        verdict
    }

    fn verdict(&mut self) -> Verdict {
        let best = self.votes.iter().map(|(_, d)| (d, self.votes.iter().filter(|(_, e)| e == d).count())).max_by_key(|&(_, n)| n);
        if let Some((digest, n)) = best {
            if 2 * n as u32 > self.wanted {
                let digest = *digest;
                let (agreeing, dissenting): (Vec<_>, Vec<_>) = self.votes.iter().partition(|(_, d)| *d == digest);
                return Verdict::Accepted {
                    digest,
                    agreeing: agreeing.into_iter().map(|&(v, _)| v).collect(),
                    dissenting: dissenting.into_iter().map(|&(v, _)| v).collect(),
                };
            }
        }
        if (self.votes.len() as u32) < self.wanted {
            return Verdict::Pending { wanted: self.wanted };
        }
        // Every replica wanted is in and none has a majority: one more.
        if self.wanted < self.max {
            self.wanted += 1;
            Verdict::Pending { wanted: self.wanted }
        } else {
            Verdict::Inconclusive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(worker: u64) -> Voter {
        Voter { worker, origin: None }
    }

    const A: Sha256Hash = Sha256Hash([1; 32]);
    const B: Sha256Hash = Sha256Hash([2; 32]);
    const C: Sha256Hash = Sha256Hash([3; 32]);

    #[test]
    fn two_agreeing_replicas_are_accepted() {
        let mut q = Quorum::new(2, 4);
        assert_eq!(q.vote(v(1), A), Verdict::Pending { wanted: 2 });
        assert_eq!(q.vote(v(2), A), Verdict::Accepted { digest: A, agreeing: vec![v(1), v(2)], dissenting: vec![] });
    }

    #[test]
    fn disagreement_asks_for_one_more_replica_at_a_time() {
        let mut q = Quorum::new(2, 4);
        q.vote(v(1), A);
        assert_eq!(q.vote(v(2), B), Verdict::Pending { wanted: 3 });
        assert_eq!(q.vote(v(3), B), Verdict::Accepted { digest: B, agreeing: vec![v(2), v(3)], dissenting: vec![v(1)] });
    }

    #[test]
    fn no_majority_at_the_maximum_is_inconclusive() {
        let mut q = Quorum::new(2, 3);
        q.vote(v(1), A);
        q.vote(v(2), B);
        assert_eq!(q.vote(v(3), C), Verdict::Inconclusive);
        assert_eq!(q.vote(v(4), A), Verdict::Inconclusive, "decided: later votes change nothing");
    }

    #[test]
    fn a_single_replica_is_its_own_majority() {
        let mut q = Quorum::new(1, 3);
        assert!(matches!(q.vote(v(1), A), Verdict::Accepted { .. }));
    }

    #[test]
    fn an_unreplicated_result_can_be_verified_again() {
        let mut q = Quorum::new(1, 3);
        assert!(q.want_more());
        assert_eq!(q.vote(v(1), A), Verdict::Pending { wanted: 2 });
        assert_eq!(q.vote(v(2), B), Verdict::Pending { wanted: 3 });
        assert!(matches!(q.vote(v(3), B), Verdict::Accepted { digest: B, .. }));
    }

    #[test]
    fn one_worker_or_one_origin_votes_once() {
        let mut q = Quorum::new(3, 3);
        let home = |worker| Voter { worker, origin: Some(7) };
        q.vote(home(1), A);
        assert!(!q.can_vote(&v(1)), "same worker");
        assert!(!q.can_vote(&home(2)), "same origin");
        assert_eq!(q.vote(home(2), A), Verdict::Pending { wanted: 3 }, "not counted");
        assert_eq!(q.votes(), 1);
        assert!(q.can_vote(&Voter { worker: 2, origin: Some(8) }));
    }

    proptest! {
        /// Whatever the votes: an accepted digest has a strict majority of the
        /// replicas wanted, `wanted` stays within the maximum, and a task with
        /// all replicas in is never left pending.
        #[test]
        fn verdicts_follow_the_majority_rule(
            k in 1u32..4, extra in 0u32..4, votes in proptest::collection::vec((0u64..6, 0u8..3), 0..12)
        ) {
            let max = k + extra;
            let mut q = Quorum::new(k, max);
            let mut counted: Vec<(u64, u8)> = vec![];
            for (worker, d) in votes {
                let fresh = !counted.iter().any(|(w, _)| *w == worker);
                let decided_before = q.decided;
                let verdict = q.vote(v(worker), Sha256Hash([d; 32]));
                if fresh && !decided_before {
                    counted.push((worker, d));
                }
                prop_assert!(q.wanted() <= max);
                match verdict {
                    Verdict::Accepted { digest, agreeing, .. } => {
                        let n = counted.iter().filter(|(_, e)| Sha256Hash([*e; 32]) == digest).count() as u32;
                        prop_assert_eq!(n, agreeing.len() as u32);
                        prop_assert!(2 * n > q.wanted(), "{} of {} wanted is no majority", n, q.wanted());
                    }
                    Verdict::Pending { wanted } => prop_assert!((counted.len() as u32) < wanted),
                    Verdict::Inconclusive => prop_assert_eq!(q.wanted(), max),
                }
            }
        }
    }
}
