//! The `idlecore` command's pieces, each a subcommand's flags and what it
//! does: `serve` (the coordinator), `submit` and `status` (the job owner's
//! side, over `client`), and `run` (the task author's check in a private
//! coordinator and headless Chromium, started by `browser`).

pub mod browser;
pub mod client;
pub mod run;
pub mod serve;
pub mod status;
pub mod submit;
