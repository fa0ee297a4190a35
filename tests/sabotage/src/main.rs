//! Runs the real scheduler and validator against simulated saboteurs
//! (this crate's library) and prints what was accepted wrongly and what
//! validation cost. `cargo xtask sabotage` runs this.
//!
//! Flags: --tasks N --workers W --saboteurs F --collude --rate S
//! --strategy eager|patient --seed S, and the policy: --replicas K
//! --max-replicas M --trust-threshold N --spot-checks R, or --no-validation;
//! --json prints the figures as one JSON object.

use idlecore_coordinator::domain::policy::Policy;
use idlecore_sabotage::{simulate, Config, Strategy};

fn value<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == flag) {
        None => Ok(default),
        Some(i) => {
            let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
            v.parse().map_err(|_| anyhow::anyhow!("{flag}: cannot read {v:?}"))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let d = Policy::default();
    let policy = if args.iter().any(|a| a == "--no-validation") {
        Policy::OFF
    } else {
        Policy {
            replicas: value(&args, "--replicas", d.replicas)?,
            max_replicas: value(&args, "--max-replicas", d.max_replicas)?,
            trust_threshold: value(&args, "--trust-threshold", d.trust_threshold)?,
            spot_checks: value(&args, "--spot-checks", d.spot_checks)?,
            comparator: None,
        }
    };
    let strategy = match value(&args, "--strategy", "eager".to_string())?.as_str() {
        "eager" => Strategy::Eager,
        "patient" => Strategy::Patient,
        other => anyhow::bail!("--strategy eager|patient, not {other:?}"),
    };
    let cfg = Config {
        tasks: value(&args, "--tasks", 100_000)?,
        workers: value(&args, "--workers", 100)?,
        saboteurs: value(&args, "--saboteurs", 0.1)?,
        collude: args.iter().any(|a| a == "--collude"),
        rate: value(&args, "--rate", 1.0)?,
        strategy,
        policy,
        seed: value(&args, "--seed", 1)?,
    };
    let r = simulate(&cfg)?;
    if args.iter().any(|a| a == "--json") {
        let json = serde_json::json!({
            "tasks": r.tasks, "accepted_wrong": r.accepted_wrong, "failed": r.failed,
            "overhead": r.overhead, "banned": r.banned, "stats": r.stats,
        });
        println!("{json}");
        return Ok(());
    }
    println!(
        "accepted-wrong {:.2e}, overhead {:.3}x ({} of {} tasks wrong, {} failed, {} bans; {:?})",
        r.accepted_wrong_rate(),
        r.overhead,
        r.accepted_wrong,
        r.tasks,
        r.failed,
        r.banned,
        r.stats
    );
    Ok(())
}
