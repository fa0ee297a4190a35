//! `idlecore`: the coordinator server and the job owner's CLI.

use clap::{Parser, Subcommand};
use idlecore_coordinator::{cli, server};

#[derive(Parser)]
#[command(name = "idlecore", version, about = "Coordinate WASI tasks across volunteers' browsers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator.
    Serve(server::ServeArgs),
    /// Submit a job and collect its results.
    Submit(cli::submit::SubmitArgs),
    /// Show a job's progress and failures.
    Status(cli::status::StatusArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => server::serve(a).await,
            Command::Submit(a) => cli::submit::run(a).await,
            Command::Status(a) => cli::status::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idlecore: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
