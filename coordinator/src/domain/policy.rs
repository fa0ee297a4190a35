//! How a job's results are checked (`Policy`), and what replicas vote with
//! (`digest`). `quorum` counts the votes and `trust` keeps each worker's
//! record; the scheduler applies them (`scheduler/validation.rs`).

use idlecore_protocol::Sha256Hash;
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
    /// A comparator module (the hash it was uploaded under) that decides
    /// whether two outputs agree; without one, outputs agree when identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparator: Option<Sha256Hash>,
}

mod defaults {
    pub fn replicas() -> u32 {
        2
    }
    pub fn max_replicas() -> u32 {
        5
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
            comparator: None,
        }
    }
}

impl Policy {
    /// Every result taken as it comes.
    pub const OFF: Policy = Policy { replicas: 1, max_replicas: 1, trust_threshold: 10, spot_checks: 0.0, comparator: None };

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
        if self.comparator.is_some() && !self.is_on() {
            return Err("validation.comparator needs replicas of at least 2 or spot checks: without them nothing is compared".into());
        }
        Ok(())
    }
}

/// The digest replicas vote with: SHA-256 over everything a run's output is
/// (exit code, stdout, stderr, and files by path), each part length-prefixed
/// so that no two different outputs encode alike. Timings and fuel are left
/// out: they describe the run, not its answer.
pub fn digest(record: &super::model::ResultRecord) -> Sha256Hash {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    match record.exit_code {
        Some(code) => part(&code.to_le_bytes()),
        None => part(&[]),
    }
    part(&record.stdout);
    part(&record.stderr);
    part(&(record.files.0.len() as u64).to_le_bytes());
    for (path, data) in &record.files.0 {
        part(path.as_bytes());
        part(data);
    }
    Sha256Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{FileMap, ResultRecord, TaskStatus};

    fn record(stdout: &[u8], stderr: &[u8]) -> ResultRecord {
        ResultRecord {
            task: 0,
            status: TaskStatus::Done,
            exit_code: Some(0),
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            elapsed_ms: 5,
            fuel_used: 100,
            files: FileMap::default(),
            error: None,
        }
    }

    #[test]
    fn digests_cover_the_output_and_not_the_run() {
        let a = record(b"ab", b"c");
        let mut timed = a.clone();
        timed.elapsed_ms = 99;
        timed.fuel_used = 1;
        assert_eq!(digest(&a), digest(&timed), "timings are not part of the answer");
        assert_ne!(digest(&a), digest(&record(b"a", b"bc")), "parts are length-prefixed");
        let mut exit = a.clone();
        exit.exit_code = Some(1);
        assert_ne!(digest(&a), digest(&exit));
        let mut file = a.clone();
        file.files.0.insert("/output/x".into(), b"1".to_vec());
        assert_ne!(digest(&a), digest(&file));
    }

    #[test]
    fn policies_are_checked() {
        assert!(Policy::default().validate().is_ok());
        assert!(Policy::OFF.validate().is_ok() && !Policy::OFF.is_on());
        let bad = [
            Policy { replicas: 0, ..Policy::default() },
            Policy { replicas: 5, max_replicas: 4, ..Policy::default() },
            Policy { max_replicas: 17, ..Policy::default() },
            Policy { spot_checks: 1.5, ..Policy::default() },
            Policy { replicas: 1, max_replicas: 1, spot_checks: 0.1, ..Policy::default() },
            Policy { trust_threshold: 0, ..Policy::default() },
            Policy { comparator: Some(Sha256Hash([7; 32])), ..Policy::OFF },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }

    #[test]
    fn a_comparator_is_named_by_its_module_hash() {
        let hash = "ab".repeat(32);
        let p: Policy = serde_json::from_value(serde_json::json!({ "comparator": hash })).unwrap();
        assert_eq!(p.comparator, Some(Sha256Hash([0xab; 32])));
        assert_eq!(serde_json::to_value(p).unwrap()["comparator"], hash.as_str());
        assert!(serde_json::to_value(Policy::default()).unwrap().get("comparator").is_none(), "absent when there is none");
        let short = serde_json::from_value::<Policy>(serde_json::json!({ "comparator": "abc" })).unwrap_err();
        assert!(short.to_string().contains("64 hex digits"), "{short}");
    }
}
