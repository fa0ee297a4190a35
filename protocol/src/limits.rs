//! Explicit maximum sizes. Both ends check them on every decoded message, so a
//! peer that breaks one gets `ErrorCode::Malformed` or `TooLarge` and no
//! further work is done with the message.

/// Largest frame, in bytes (stdin or stdout+stderr of one task must fit).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Longest `agent` string in `Hello`, and `message` in failures and errors.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Most arguments in a lease.
pub const MAX_ARGS: usize = 1024;
/// Most environment variables in a lease.
pub const MAX_ENV: usize = 1024;
/// Longest single argument, variable name or value.
pub const MAX_ARG_BYTES: usize = 64 * 1024;
/// Most leases named in one heartbeat.
pub const MAX_HEARTBEAT_LEASES: usize = 4096;
/// Most slots a worker may advertise.
pub const MAX_SLOTS: u32 = 256;
/// Most preopened directories in a lease.
pub const MAX_DIRS: usize = 16;
/// Most files in a lease or result, over all directories.
pub const MAX_FILES: usize = 4096;
/// Longest file or directory path.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest SDP offer or answer.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Longest ICE candidate string, `mid`, URL, TURN username or credential.
pub const MAX_ICE_BYTES: usize = 1024;
/// Most ICE servers in `Welcome`, and URLs per server.
pub const MAX_ICE_SERVERS: usize = 8;
/// Most blobs named in one `Have`.
pub const MAX_HAVE_BLOBS: usize = 1024;
/// Most peers in one `Sources`.
pub const MAX_SOURCES: usize = 8;
/// Most input blobs in a lease.
pub const MAX_LEASE_BLOBS: usize = 64;
/// Most bytes of input blobs one lease names, all together.
pub const MAX_LEASE_BLOB_BYTES: u64 = 256 * 1024 * 1024;
