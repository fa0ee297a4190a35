//! Every message between an idlecore worker and its coordinator.
//!
//! One WebSocket binary frame carries one message. A message is encoded with
//! [postcard](https://docs.rs/postcard) (varint integers, length-prefixed bytes
//! and strings, enums as a varint variant index); `docs/protocol.md` spells the
//! layout out byte by byte. Both ends call [`decode_worker`] /
//! [`decode_coordinator`], which enforce [`MAX_FRAME_BYTES`] and the per-field
//! limits in [`limits`] before anything else sees the message.

#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

mod bounded;
mod codec;
mod hash;
pub mod limits;
mod peers;

pub mod pieces;
pub use codec::{check_signal, decode_coordinator, decode_worker, encode_coordinator, encode_worker, hello_version, DecodeError};
pub use hash::{NotAHash, Sha256Hash};
pub use peers::{Have, IceCandidate, IceServer, Signal, SignalPayload, Sources, Want};

/// The protocol version this crate speaks. A coordinator refuses a `Hello`
/// carrying any other version with [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u32 = 4;

/// A lease's id: 128 bits the coordinator draws so that no worker can
/// guess another's (a report names its lease, and only that).
pub type LeaseId = u128;

/// Sent in `Welcome`, presented in the next `Hello` after a reconnect: proves
/// that the new session is the same worker, which goes on with its leases
/// (the coordinator takes a report only from the worker holding the lease).
/// Opaque to the worker (the coordinator's: a worker id and a MAC of it).
pub type ResumeSecret = [u8; 24];

/// Largest frame either side accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = limits::MAX_FRAME_BYTES;

/// Messages a worker sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// First message of a session.
    Hello(Hello),
    /// A task ran to completion (any exit code).
    Result(TaskResult),
    /// A task could not produce a result.
    Failure(TaskFailure),
    /// Sent every `Welcome::heartbeat_ms`; lists the leases still running.
    Heartbeat(Heartbeat),
    /// From now on hold at most this many leases (0: paused). Leases already
    /// held are not revoked; the worker gives back what it will not run.
    Capacity(Capacity),
    /// Signaling for a peer the coordinator introduced (see `Sources`).
    Signal(Signal),
    /// Blobs this worker holds and serves to peers.
    Have(Have),
    /// Asks which peers hold a blob.
    Want(Want),
}

/// Messages a coordinator sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// Answer to a valid `Hello`.
    Welcome(Welcome),
    /// Run this task.
    Lease(Lease),
    /// Stop running this lease; no result is wanted any more.
    Cancel(Cancel),
    /// The result or failure for this lease is stored; the worker may forget it.
    Ack(Ack),
    /// The session is over because of this error; the coordinator closes the socket next.
    Error(ProtocolError),
    /// Several tasks at once (each exactly as in `Lease`): leases ready together travel in one frame.
    Leases(Vec<Lease>),
    /// Signaling from a peer.
    Signal(Signal),
    /// The answer to `Want`.
    Sources(Sources),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Tasks the worker runs at once. The coordinator never has more leases
    /// outstanding on this session.
    pub slots: u32,
    /// Free-form description of the worker (user agent, build), for logs.
    pub agent: String,
    /// The last `Welcome`'s `resume`, when this is a reconnect.
    #[serde(with = "serde_bytes")]
    pub resume: Option<ResumeSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    /// Identifies the session in coordinator logs.
    pub session: u64,
    /// How often the worker sends `Heartbeat`, in milliseconds.
    pub heartbeat_ms: u32,
    /// Path (resolved against the coordinator's HTTP origin) under which
    /// every blob (modules and task inputs) is served as `{blob_path}{hex sha256}`.
    pub blob_path: String,
    /// Largest frame the coordinator accepts from this worker.
    pub max_frame: u32,
    /// STUN/TURN servers for peer connections, as the operator configured them.
    pub ice_servers: Vec<IceServer>,
    /// Present this in the next `Hello` (see [`ResumeSecret`]).
    #[serde(with = "serde_bytes")]
    pub resume: ResumeSecret,
}

/// Per-task limits, chosen by the job owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Wall-clock deadline for one run, in milliseconds.
    pub timeout_ms: u32,
    /// Bytes of stdout plus stderr a run may write.
    pub max_output_bytes: u32,
    /// Largest linear memory, in 64 KiB pages.
    pub max_memory_pages: u32,
    /// Instructions the run may execute (see `docs/protocol.md`); 0 means no limit.
    pub fuel: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Attempt id: unique per dispatch. Results name it; stale ones are refused.
    pub lease: LeaseId,
    pub job: u64,
    pub task: u32,
    /// SHA-256 of the (sandboxed) module's bytes.
    pub module: Sha256Hash,
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    /// argv[1..]; the worker supplies argv[0].
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_ARGS }>")]
    pub args: Vec<String>,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_ENV }>")]
    pub env: Vec<(String, String)>,
    pub limits: TaskLimits,
    /// Seeds the task's clocks and random numbers so honest runs agree.
    pub seed: u64,
    /// False when the job opted into the host's real clocks and entropy.
    pub deterministic: bool,
    /// Directories the task starts with (WASI preopens), with their files.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_DIRS }>")]
    pub dirs: Vec<TaskDir>,
    /// Inputs too large to travel in the lease: the worker fetches each by
    /// hash (from peers or `{blob_path}{hex}`) and puts it in place before the run.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_LEASE_BLOBS }>")]
    pub blobs: Vec<InputBlob>,
}

/// A task input fetched by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputBlob {
    pub hash: Sha256Hash,
    /// Exact size in bytes (a fetch stops past it).
    pub size: u64,
    pub target: BlobTarget,
}

/// Where a fetched input goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobTarget {
    /// The task's stdin (the lease's own `stdin` is then empty).
    Stdin,
    /// A file of `dirs[dir]`, at `path` relative to it.
    File { dir: u32, path: String },
}

/// A preopened directory: its guest path, whether the task may change it, and
/// its files as (`a/b` path relative to the directory, bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDir {
    pub guest: String,
    pub writable: bool,
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_FILES }>")]
    pub files: Vec<TaskFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFile {
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// Every lease to stop: one answer to a heartbeat, however many it names.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_HEARTBEAT_LEASES }>")]
    pub leases: Vec<LeaseId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub lease: LeaseId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub lease: LeaseId,
    pub exit_code: i32,
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Wall-clock run time on the worker, in milliseconds.
    pub elapsed_ms: u32,
    /// Instructions executed, as counted by the module's fuel meter.
    pub fuel_used: u64,
    /// Files of the writable directories after the run; `path` is the full
    /// guest path (`/output/a.txt`).
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_FILES }>")]
    pub files: Vec<TaskFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub lease: LeaseId,
    pub kind: FailureKind,
    pub message: String,
}

/// Why a task produced no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The module could not be downloaded or its hash did not match.
    ModuleFetch,
    /// The module failed to compile or imports something the host does not provide.
    ModuleInvalid,
    /// The module trapped (unreachable, out-of-bounds access, stack overflow...).
    Trap,
    /// The run passed its wall-clock deadline.
    Timeout,
    /// The run wrote more than `max_output_bytes`.
    OutputLimit,
    /// The module needs more memory than `max_memory_pages`.
    MemoryLimit,
    /// The executor died for a reason unrelated to the task.
    ExecutorCrashed,
    /// Anything else; `message` says what.
    Internal,
    /// The run used up its fuel.
    FuelExhausted,
    /// The worker gave the lease back unrun or stopped it (paused, stopped,
    /// or its CPU budget lowered); nothing is wrong with the task.
    Withdrawn,
    /// An input blob could not be fetched or its hash did not match.
    InputFetch,
}

impl FailureKind {
    /// Stable lower-case name used in the HTTP API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ModuleFetch => "module_fetch",
            FailureKind::ModuleInvalid => "module_invalid",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::OutputLimit => "output_limit",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::ExecutorCrashed => "executor_crashed",
            FailureKind::Internal => "internal",
            FailureKind::FuelExhausted => "fuel_exhausted",
            FailureKind::Withdrawn => "withdrawn",
            FailureKind::InputFetch => "input_fetch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub slots: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { limits::MAX_HEARTBEAT_LEASES }>")]
    pub leases: Vec<LeaseId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame could not be decoded, or a field broke a limit.
    Malformed,
    /// `Hello` carried a version this coordinator does not speak.
    UnsupportedVersion,
    /// A valid message arrived when it was not allowed (e.g. `Result` before `Hello`).
    UnexpectedMessage,
    /// The frame was larger than the receiver's maximum.
    TooLarge,
    /// The coordinator is shutting down.
    ShuttingDown,
}
