//! Starts the real `idlecore` binary built for these tests.

#![allow(dead_code)]

use idlecore_e2e::{Coordinator, CoordinatorConfig};
use std::path::Path;

pub const TOKEN: &str = "test-token-123";

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_idlecore"))
}

pub fn start(data: &Path) -> Coordinator {
    start_with(data, Some(TOKEN), None, 1000)
}

/// A coordinator started with more `serve` flags.
pub fn start_extra(data: &Path, extra: &[&str]) -> Coordinator {
    Coordinator::start(&CoordinatorConfig { bin: bin(), data, token: Some(TOKEN), addr: None, site: None, heartbeat_ms: 1000, extra })
        .expect("coordinator starts")
}

pub fn start_with(data: &Path, token: Option<&str>, addr: Option<std::net::SocketAddr>, heartbeat_ms: u32) -> Coordinator {
    Coordinator::start(&CoordinatorConfig { bin: bin(), data, token, addr, site: None, heartbeat_ms, extra: &[] })
        .expect("coordinator starts")
}

/// A worker's report that a lease ran and printed `stdout` (exit code 0).
pub fn result(lease: idlecore_protocol::LeaseId, stdout: &[u8]) -> idlecore_protocol::WorkerMessage {
    use idlecore_protocol::{TaskResult, WorkerMessage};
    WorkerMessage::Result(TaskResult {
        lease,
        exit_code: 0,
        stdout: stdout.to_vec(),
        stderr: vec![],
        elapsed_ms: 1,
        fuel_used: 0,
        files: vec![],
    })
}

/// The smallest valid module header: `(module)`.
pub const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A minimal WASI command, distinct per `n` (a custom section carries `n`).
pub fn module(n: u8) -> Vec<u8> {
    let mut m = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#).unwrap();
    m.extend_from_slice(&[0, 3, 1, b'n', n]);
    m
}
