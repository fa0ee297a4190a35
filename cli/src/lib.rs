//! The `idlecore` command's pieces, each a subcommand's flags and what it
//! does: `serve` (the coordinator), `submit` and `status` (the job owner's
//! side, over `client`), `run` (the task author's check, natively or in a
//! private coordinator and headless Chromium, started by `browser`) and
//! `worker` (a native worker); `functions` (`idlecore fn`: deploy, call, list,
//! remove functions).

pub mod browser;
pub mod client;
pub mod functions;
pub mod run;
pub mod serve;
pub mod status;
pub mod submit;
pub mod worker;
