//! Result validation: the rules that decide when a task's output can be
//! trusted. `quorum` votes on output digests of a task's replicas; `trust`
//! keeps each worker's record of valid results, which decides how often its
//! work is replicated.
//!
//! Not wired into the scheduler yet: jobs still take the first result of a
//! task (see "Known gaps" in docs/architecture.md).

pub mod quorum;
pub mod trust;
