//! `idlecore fn deploy|call|list|rm|stats`: the function owner's side, over
//! the coordinator's HTTP API. `fn call` behaves like running the function
//! as a local command: stdin in, the function's stdout and stderr out, its
//! exit code as the command's.

use crate::client::{Client, ClientArgs};
use crate::run::FAILED_RUN_STATUS;
use anyhow::{bail, Context};
use idlecore_coordinator::domain::functions::Verify;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum FnCommand {
    /// Deploy a WASI command as a function (again, if NAME exists: calls then run the new module).
    Deploy(DeployArgs),
    /// Call a function: stdin is its stdin, ARGS its arguments; its stdout,
    /// stderr and exit code are this command's.
    Call(CallArgs),
    /// List the deployed functions.
    List(ListArgs),
    /// Remove a function.
    Rm(NameArgs),
    /// A function's figures: calls, where they ran, latency, cold starts.
    Stats(NameArgs),
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Name in URLs (`POST /fn/NAME`): a-z, 0-9, '-' and '_'.
    pub name: String,
    /// The WASI command module (.wasm).
    pub module: PathBuf,
    /// Seconds a call may take, waiting included; past it the caller gets 504.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Linear memory one call may use, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Instructions one call may execute (0: no limit but the timeout).
    #[arg(long, default_value_t = 0)]
    pub fuel: u64,
    /// Bytes of stdout and stderr one call may write, in KiB.
    #[arg(long, default_value_t = 6144)]
    pub max_output_kib: u32,
    /// An environment variable every call sees (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// What a caller may be given from an untrusted worker's run: trusted,
    /// replicas:K, sample:R or none.
    #[arg(long, default_value = "trusted", value_parser = |s: &str| s.parse::<Verify>())]
    pub verify: Verify,
    /// Anyone may call it, without the token.
    #[arg(long)]
    pub public: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    pub name: String,
    /// The function's arguments (argv[1..]).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not K=V")),
    }
}

pub async fn run(command: FnCommand) -> anyhow::Result<ExitCode> {
    match command {
        FnCommand::Deploy(a) => deploy(a).await,
        FnCommand::Call(a) => call(a).await,
        FnCommand::List(a) => list(a).await,
        FnCommand::Rm(a) => {
            Client::new(&a.client)?.remove_function(&a.name).await?;
            println!("removed {}", a.name);
            Ok(ExitCode::SUCCESS)
        }
        FnCommand::Stats(a) => stats(a).await,
    }
}

async fn deploy(a: DeployArgs) -> anyhow::Result<ExitCode> {
    if !(a.timeout > 0.0 && a.timeout <= 900.0) {
        bail!("--timeout must be more than 0 and at most 900 seconds");
    }
    let client = Client::new(&a.client)?;
    let wasm = std::fs::read(&a.module).with_context(|| format!("reading {}", a.module.display()))?;
    let module = client.upload_module(wasm).await?;
    let spec = serde_json::json!({
        "module": module,
        "timeout_ms": (a.timeout * 1000.0).round() as u32,
        "max_memory_mib": a.memory,
        "fuel": a.fuel,
        "max_output_bytes": a.max_output_kib.saturating_mul(1024),
        "env": a.env.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "verify": a.verify.to_string(),
        "public": a.public,
    });
    let (new, _) = client.deploy_function(&a.name, &spec).await?;
    let who = if a.public { "anyone" } else { "the token's holders" };
    println!("{} {} (module {module}); {who} may call it:", if new { "deployed" } else { "redeployed" }, a.name);
    println!("  curl --data-binary @input {}/fn/{}", client.base(), a.name);
    Ok(ExitCode::SUCCESS)
}

async fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let client = Client::caller(&a.client)?;
    let mut stdin = Vec::new();
    // A terminal is not input: a call from a prompt has an empty stdin.
    if !std::io::stdin().is_terminal() {
        std::io::stdin().read_to_end(&mut stdin).context("reading stdin")?;
    }
    let answer = client.call_function(&a.name, &a.args, stdin).await?;
    if let Some(error) = answer.error {
        eprintln!("idlecore fn call: {error}");
        return Ok(ExitCode::from(FAILED_RUN_STATUS));
    }
    std::io::stdout().write_all(&answer.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&answer.stderr)?;
    Ok(ExitCode::from(answer.exit_code.clamp(0, 255) as u8))
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let all = Client::new(&a.client)?.list_functions().await?;
    if all.is_empty() {
        println!("no functions deployed");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<8} {:<14} {:>8} {:>10} {:>10}  module", "name", "access", "verify", "calls", "p50 ms", "p99 ms");
    for f in all {
        let ms = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<8} {:<14} {:>8} {:>10} {:>10}  {}",
            f["name"].as_str().unwrap_or("?"),
            if f["public"].as_bool() == Some(true) { "public" } else { "token" },
            f["verify"].as_str().unwrap_or("?"),
            f["stats"]["calls"],
            ms(&f["stats"]["p50_ms"]),
            ms(&f["stats"]["p99_ms"]),
            f["module"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats(a: NameArgs) -> anyhow::Result<ExitCode> {
    let f = Client::new(&a.client)?.function(&a.name).await?;
    let s = &f["stats"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let ms = |k: &str| s[k].as_f64().map(|x| format!("{x:.2} ms")).unwrap_or_else(|| "-".into());
    println!("function {} (module {}, verify {})", a.name, f["module"].as_str().unwrap_or("?"), f["verify"].as_str().unwrap_or("?"));
    println!(
        "calls {}: {} answered, {} failed, {} timed out, {} refused for overload",
        n("calls"),
        n("answered"),
        n("failed"),
        n("timed_out"),
        n("rejected")
    );
    println!(
        "served by the coordinator {}, browsers {}, native workers {}",
        n("served_by_coordinator"),
        n("served_by_browser"),
        n("served_by_native_worker")
    );
    println!(
        "latency p50 {}, p99 {}; cold starts {} (warm share {:.1}%)",
        ms("p50_ms"),
        ms("p99_ms"),
        n("cold_starts"),
        s["warm_share"].as_f64().unwrap_or(1.0) * 100.0
    );
    Ok(ExitCode::SUCCESS)
}
