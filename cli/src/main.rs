//! `idlecore`: the coordinator server and the job owner's CLI. Parses the
//! command line and hands each subcommand its flags (see the library).

use clap::{Parser, Subcommand};
use idlecore_cli::{functions, run, serve, status, submit, worker};

#[derive(Parser)]
#[command(name = "idlecore", version, about = "Coordinate WASI tasks across volunteers' browsers and idle machines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator.
    Serve(serve::ServeArgs),
    /// Submit a job and collect its results.
    Submit(submit::SubmitArgs),
    /// Show a job's progress and failures.
    Status(status::StatusArgs),
    /// Run one task in the worker's sandbox (natively, or in headless Chromium), like `wasmtime run`.
    Run(run::RunArgs),
    /// Run a native worker for a coordinator until SIGINT or SIGTERM.
    Worker(worker::WorkerArgs),
    /// Deploy, call, list and remove functions (WASI commands called over HTTP).
    #[command(subcommand)]
    Fn(functions::FnCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // TLS clients (`wss://`, `https://`) use ring. Named here, not left to
    // rustls: with both of its back ends compiled in it would pick neither
    // and panic at the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `run` prints only what the task prints; its coordinator stays quiet.
    let default_filter = if matches!(cli.command, Command::Run(_)) { "warn" } else { "info,tower_http=warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs sent to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Submit(a) => submit::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Worker(a) => worker::run(a).await,
            Command::Fn(c) => return functions::run(c).await,
            Command::Run(a) => match run::run(a).await {
                Ok(run::RunOutcome::Exited(code)) => return Ok(std::process::ExitCode::from(code.clamp(0, 255) as u8)),
                Ok(run::RunOutcome::Failed(why)) => {
                    eprintln!("idlecore run: the task failed: {why}");
                    return Ok(std::process::ExitCode::from(run::FAILED_RUN_STATUS));
                }
                Err(e) => Err(e),
            },
        }
        .map(|()| std::process::ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("idlecore: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
