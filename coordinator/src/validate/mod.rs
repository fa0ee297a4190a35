//! Result validation: the rules that decide when a task's output can be
//! trusted. `quorum` votes on output digests of a task's replicas; `trust`
//! keeps each worker's record of verified results, which decides how often
//! its work is replicated. The scheduler applies them (`scheduler/validation.rs`).

pub mod quorum;
pub mod trust;

use serde::{Deserialize, Serialize};

/// How a job's results are checked. The defaults replicate the work of
/// untrusted workers twice, trust a worker after 10 verified results, and
/// spot-check one accepted task in 20 against a known answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Results wanted per task from workers that are not trusted (k). 1:
    /// every result is taken as it comes, unless spot checks are on.
    #[serde(default = "defaults::replicas")]
    pub replicas: u32,
    /// Results at most per task, counting those added on disagreement.
    #[serde(default = "defaults::max_replicas")]
    pub max_replicas: u32,
    /// Verified results in a row before a worker's work may go unreplicated (N).
    #[serde(default = "defaults::trust_threshold")]
    pub trust_threshold: u32,
    /// Share of accepted tasks that send a known-answer task to some worker.
    #[serde(default = "defaults::spot_checks")]
    pub spot_checks: f64,
}

mod defaults {
    pub fn replicas() -> u32 {
        2
    }
    pub fn max_replicas() -> u32 {
        4
    }
    pub fn trust_threshold() -> u32 {
        10
    }
    pub fn spot_checks() -> f64 {
        0.05
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            replicas: defaults::replicas(),
            max_replicas: defaults::max_replicas(),
            trust_threshold: defaults::trust_threshold(),
            spot_checks: defaults::spot_checks(),
        }
    }
}

impl Policy {
    /// Every result taken as it comes.
    pub const OFF: Policy = Policy { replicas: 1, max_replicas: 1, trust_threshold: 10, spot_checks: 0.0 };

    pub fn is_on(&self) -> bool {
        self.replicas > 1 || self.spot_checks > 0.0
    }

    /// Replicas of a task whose accepted result is verified again (at least two).
    pub fn reverify_replicas(&self) -> u32 {
        self.replicas.max(2)
    }

    /// Checks a job owner's policy; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.replicas == 0 || self.replicas > self.max_replicas || self.max_replicas > 16 {
            return Err("validation: need 1 <= replicas <= max_replicas <= 16".into());
        }
        if self.is_on() && self.max_replicas < 2 {
            return Err("validation: spot checks need max_replicas of at least 2 (to verify again)".into());
        }
        if self.trust_threshold == 0 {
            return Err("validation.trust_threshold must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.spot_checks) {
            return Err("validation.spot_checks must be between 0 and 1".into());
        }
        Ok(())
    }
}
