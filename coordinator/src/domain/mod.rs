//! The coordinator's core: what jobs, tasks and results are, the rules that
//! check them, and the state machines that decide who runs what. Nothing
//! here does I/O or reads the clock: callers pass `now` in and drain what
//! to do (`Scheduler::poll_output`, `Peers::poll_output`), as str0m's `Rtc`
//! is driven.

pub mod functions;
pub mod model;
pub mod peers;
pub mod policy;
pub mod quorum;
pub mod rate;
pub mod scheduler;
pub mod tasks;
pub mod trust;

/// A worker session, as the scheduler and the peer directory know it.
pub type WorkerId = u64;
/// One attempt at a unit of work, as a lease names it (128 unguessable bits).
pub type LeaseId = idlecore_protocol::LeaseId;
