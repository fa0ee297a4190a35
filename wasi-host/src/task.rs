//! A task run as the protocol describes it, on any engine: a lease and its
//! input blobs become a [`WasiCtx`] ([`context`]), and how the run ended
//! becomes the worker's report ([`report`]). Engines differ only in how they
//! instantiate and call the module in between.

use crate::{Clocks, Random, WasiCtx};
use idlecore_protocol::{BlobTarget, FailureKind, Lease, TaskFailure, TaskFile, TaskResult, WorkerMessage};

/// `argv[0]` of every task.
pub const PROGRAM: &str = "task.wasm";

/// Why a run produced no exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// Imports something this host does not provide, or is not a command.
    Invalid(String),
    /// Trapped, or threw during instantiation.
    Trap(String),
    /// Wrote more than the output limit.
    OutputLimit(u32),
    /// Ran out of fuel after executing this many instructions.
    FuelExhausted(u64),
    /// Needed more memory than the cap.
    MemoryLimit(String),
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Instructions executed (0 for a module without a fuel meter).
    pub fuel_used: u64,
    /// Files of the writable preopens, by full guest path.
    pub files: Vec<TaskFile>,
}

/// Real time and entropy, for a job that opted out of determinism.
pub type HostSources = (Box<dyn Clocks>, Box<dyn Random>);

/// The run's WASI state: the lease's args, environment, stdin and
/// directories, with each input blob (`inputs`, in the order the lease
/// names them) put in place. `host` gives real clocks and entropy when the
/// job is not deterministic. The error is the failure to report.
pub fn context(lease: &Lease, mut inputs: Vec<Vec<u8>>, host: impl FnOnce() -> HostSources) -> Result<WasiCtx, TaskFailure> {
    let failure = |message: String| TaskFailure { lease: lease.lease, kind: FailureKind::Internal, message };
    let sizes_match = inputs.len() == lease.blobs.len() && lease.blobs.iter().zip(&inputs).all(|(b, i)| b.size == i.len() as u64);
    if !sizes_match {
        return Err(failure("the executor was not given the lease's inputs".into()));
    }
    let mut dirs: Vec<Vec<(String, Vec<u8>)>> =
        lease.dirs.iter().map(|d| d.files.iter().map(|f| (f.path.clone(), f.data.clone())).collect()).collect();
    let mut stdin = lease.stdin.clone();
    for (blob, bytes) in lease.blobs.iter().zip(inputs.iter_mut()) {
        let bytes = std::mem::take(bytes);
        match &blob.target {
            BlobTarget::Stdin => stdin = bytes,
            // `decode_coordinator` checked that `dir` is one of the lease's.
            BlobTarget::File { dir, path } => dirs[*dir as usize].push((path.clone(), bytes)),
        }
    }
    let mut ctx = WasiCtx::new(PROGRAM, &lease.args, &lease.env, stdin, lease.seed, lease.limits.max_output_bytes);
    if !lease.deterministic {
        let (clocks, random) = host();
        ctx = ctx.with_clocks(clocks).with_random(random);
    }
    for (dir, files) in lease.dirs.iter().zip(dirs) {
        ctx = ctx.with_preopen(&dir.guest, dir.writable, files).map_err(|e| failure(format!("preparing {}: {e}", dir.guest)))?;
    }
    Ok(ctx)
}

/// The files the run left in its writable directories, by full guest path
/// (`/output/a.txt`; a root preopen's files are `/a.txt`).
pub fn output_files(ctx: &WasiCtx) -> Vec<TaskFile> {
    ctx.output_files()
        .into_iter()
        .map(|(dir, path, data)| TaskFile { path: format!("{}/{path}", dir.trim_end_matches('/')), data })
        .collect()
}

/// Why a run's output cannot travel as a `Result` (the coordinator would end
/// the session for it): too many files, a path too long, or more bytes than
/// a frame holds. The worker reports `OutputLimit` itself instead.
fn beyond_protocol(out: &RunOutput) -> Option<String> {
    use idlecore_protocol::limits::{MAX_FILES, MAX_FRAME_BYTES, MAX_PATH_BYTES};
    if out.files.len() > MAX_FILES {
        return Some(format!("the run left {} files; a result holds at most {MAX_FILES}", out.files.len()));
    }
    if let Some(f) = out.files.iter().find(|f| f.path.len() > MAX_PATH_BYTES) {
        return Some(format!("the run left a file path of {} bytes; at most {MAX_PATH_BYTES}", f.path.len()));
    }
    // An upper bound of the encoded size: every length prefix at its longest.
    let bytes = 64 + out.stdout.len() + out.stderr.len() + out.files.iter().map(|f| 20 + f.path.len() + f.data.len()).sum::<usize>();
    (bytes > MAX_FRAME_BYTES).then(|| format!("the run's output takes {bytes} bytes; a result holds at most {MAX_FRAME_BYTES}"))
}

/// The report of a run of `lease` that took `elapsed_ms`.
pub fn report(lease: idlecore_protocol::LeaseId, run: Result<RunOutput, RunError>, elapsed_ms: u32) -> WorkerMessage {
    let (kind, message) = match run {
        Ok(out) if let Some(broken) = beyond_protocol(&out) => (FailureKind::OutputLimit, broken),
        Ok(out) => {
            return WorkerMessage::Result(TaskResult {
                lease,
                exit_code: out.exit_code,
                stdout: out.stdout,
                stderr: out.stderr,
                elapsed_ms,
                fuel_used: out.fuel_used,
                files: out.files,
            })
        }
        Err(RunError::Invalid(m)) => (FailureKind::ModuleInvalid, m),
        Err(RunError::Trap(m)) => (FailureKind::Trap, m),
        Err(RunError::OutputLimit(max)) => (FailureKind::OutputLimit, format!("stdout and stderr exceeded {max} bytes")),
        Err(RunError::FuelExhausted(used)) => (FailureKind::FuelExhausted, format!("ran out of fuel after {used} instructions")),
        Err(RunError::MemoryLimit(m)) => (FailureKind::MemoryLimit, m),
    };
    WorkerMessage::Failure(TaskFailure { lease, kind, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use idlecore_protocol::{InputBlob, Sha256Hash, TaskDir, TaskLimits};

    fn lease() -> Lease {
        Lease {
            lease: 9,
            job: 1,
            task: 0,
            module: Sha256Hash([1; 32]),
            stdin: b"inline".to_vec(),
            args: vec!["a".into()],
            env: vec![],
            limits: TaskLimits { timeout_ms: 1000, max_output_bytes: 100, max_memory_pages: 16, fuel: 0 },
            seed: 5,
            deterministic: true,
            dirs: vec![
                TaskDir { guest: "/in".into(), writable: false, files: vec![] },
                TaskDir { guest: "/".into(), writable: true, files: vec![TaskFile { path: "k.txt".into(), data: b"k".to_vec() }] },
            ],
            blobs: vec![
                InputBlob { hash: Sha256Hash([2; 32]), size: 3, target: BlobTarget::Stdin },
                InputBlob { hash: Sha256Hash([3; 32]), size: 2, target: BlobTarget::File { dir: 1, path: "b.bin".into() } },
            ],
        }
    }

    fn no_host() -> HostSources {
        panic!("a deterministic task gets no host clocks")
    }

    #[test]
    fn inputs_go_where_the_lease_says_and_files_come_back_by_guest_path() {
        let ctx = context(&lease(), vec![b"big".to_vec(), b"bb".to_vec()], no_host).unwrap();
        let files = output_files(&ctx);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/b.bin", "/k.txt"], "a root preopen's files are `/name`");
        assert_eq!(files[0].data, b"bb");
    }

    #[test]
    fn inputs_that_do_not_match_the_lease_are_refused() {
        for inputs in [vec![], vec![b"big".to_vec(), b"b".to_vec()]] {
            let Err(e) = context(&lease(), inputs, no_host) else { panic!("inputs that do not match were taken") };
            assert_eq!((e.lease, e.kind), (9, FailureKind::Internal));
        }
    }

    #[test]
    fn each_way_a_run_ends_has_its_failure_kind() {
        let kind = |e| match report(1, Err(e), 0) {
            WorkerMessage::Failure(f) => f.kind,
            _ => unreachable!(),
        };
        assert_eq!(kind(RunError::Invalid("x".into())), FailureKind::ModuleInvalid);
        assert_eq!(kind(RunError::Trap("x".into())), FailureKind::Trap);
        assert_eq!(kind(RunError::OutputLimit(5)), FailureKind::OutputLimit);
        assert_eq!(kind(RunError::FuelExhausted(5)), FailureKind::FuelExhausted);
        assert_eq!(kind(RunError::MemoryLimit("x".into())), FailureKind::MemoryLimit);
        let out = RunOutput { exit_code: 3, stdout: b"o".to_vec(), stderr: vec![], fuel_used: 7, files: vec![] };
        assert!(matches!(report(1, Ok(out), 12), WorkerMessage::Result(r) if r.exit_code == 3 && r.elapsed_ms == 12 && r.fuel_used == 7));
    }

    /// What the coordinator would refuse (ending the session) is reported as
    /// `OutputLimit` by the worker itself; what fits goes as a result.
    #[test]
    fn a_result_beyond_the_protocol_limits_is_an_output_limit() {
        use idlecore_protocol::{decode_worker, encode_worker, limits};
        let file = |path: String, size: usize| TaskFile { path, data: vec![7; size] };
        let run = |stdout: usize, files: Vec<TaskFile>| {
            let out = RunOutput { exit_code: 0, stdout: vec![1; stdout], stderr: vec![], fuel_used: 0, files };
            report(1, Ok(out), 0)
        };
        let kind = |m: &WorkerMessage| match m {
            WorkerMessage::Failure(f) => Some(f.kind),
            _ => None,
        };
        let many = (0..=limits::MAX_FILES).map(|i| file(format!("/output/{i}"), 0)).collect();
        assert_eq!(kind(&run(0, many)), Some(FailureKind::OutputLimit));
        let long = vec![file(format!("/output/{}", "a".repeat(limits::MAX_PATH_BYTES)), 1)];
        assert_eq!(kind(&run(0, long)), Some(FailureKind::OutputLimit));
        let big = vec![file("/output/big".into(), 2 << 20)];
        assert_eq!(kind(&run(limits::MAX_FRAME_BYTES - (1 << 20), big)), Some(FailureKind::OutputLimit));
        // Just under the frame limit: a result, and one the coordinator decodes.
        let fits = run(limits::MAX_FRAME_BYTES - (1 << 20), vec![file("/output/a".into(), (1 << 20) - 200)]);
        assert_eq!(kind(&fits), None);
        assert!(decode_worker(&encode_worker(&fits)).is_ok());
    }
}
