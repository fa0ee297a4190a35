//! `cargo xtask sabotage`: the real scheduler and validator against simulated
//! honest and cheating workers (`tests/sabotage`, its `sabotage` binary
//! run in a release build). Prints
//! `accepted-wrong R, overhead X` for one configuration, or with `--table`
//! the markdown table `cargo xtask bench` puts in docs/benchmarks.md.

use crate::root;
use anyhow::Context;
use std::process::{Command, Stdio};

/// Runs the simulation with `args` (the binary's flags); returns its stdout.
fn simulate(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("cargo")
        .args(["run", "--quiet", "--release", "-p", "idlecore-sabotage", "--bin", "sabotage", "--"])
        .args(args)
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .context("running the sabotage simulation")?;
    anyhow::ensure!(out.status.success(), "the sabotage simulation failed: {}", String::from_utf8_lossy(&out.stdout));
    Ok(String::from_utf8(out.stdout)?)
}

struct Figures {
    wrong: u64,
    tasks: u64,
    failed: u64,
    overhead: f64,
}

fn figures(args: &[&str]) -> anyhow::Result<Figures> {
    let mut all = args.to_vec();
    all.push("--json");
    let v: serde_json::Value = serde_json::from_str(simulate(&all)?.trim())?;
    let n = |k: &str| v[k].as_u64().with_context(|| format!("{k} in {v}"));
    Ok(Figures {
        wrong: n("accepted_wrong")?,
        tasks: n("tasks")?,
        failed: n("failed")?,
        overhead: v["overhead"].as_f64().context("overhead")?,
    })
}

fn rate(f: &Figures) -> String {
    if f.wrong == 0 {
        format!("0 (< {:.0e})", 1.0 / f.tasks as f64)
    } else {
        format!("{:.1e}", f.wrong as f64 / f.tasks as f64)
    }
}

/// Policies compared in each row: the defaults, no validation, and plain
/// replication (two replicas always, no trust, no spot checks).
const NONE: &[&str] = &["--no-validation"];
const PLAIN: &[&str] = &["--trust-threshold", "1000000000", "--spot-checks", "0"];

const READING: &str = "
How the default policy (2 replicas for untrusted workers, at most 5; trusted after 10 verified results; spot
checks on 5% of accepted tasks) gets there, and where it does not:

- **Colluders agree with each other, never with a known answer.** A quorum's agreement raises a worker's
  record, but only a passed spot check vouches for what it accepted earlier (its *tail*). A wrong spot-check
  answer bans the worker and its tail is decided again; before a job completes, every worker whose tail
  holds some of the job's acceptances gets a spot check aimed at it (or, if it left, its tail is decided
  again).
- **Outvoted by the untrusted proves little.** Colluders can outvote an honest worker; that costs the
  honest worker nothing unless a trusted worker was in the majority. Otherwise each outvote would make the
  victim's work replicated again and its tail re-run (with 10% eager colluders: 1.73x instead of 1.33x).
- **Independent saboteurs** never agree, so they are never accepted, but with many of them a task can reach
  the maximum of 5 replicas with no strict majority: it fails (\"no quorum\") rather than take a guess.
- **Patient saboteurs' baselines are 0** because without validation, or with plain replication, nobody is
  ever trusted, so they never start cheating; the cost they impose there is the baseline's own overhead.
- **Saboteurs that cheat on only part of their tasks** (the last rows) get wrong results in: a spot check
  they happen to answer right vouches for a tail that holds earlier cheats. Raising the spot-check rate, or
  a credibility rule (results accepted only once enough spot checks back their worker), is the lever; not
  done yet.
";

/// The markdown section for docs/benchmarks.md.
pub fn table(tasks: u32) -> anyhow::Result<String> {
    let tasks = tasks.to_string();
    let mut md = format!(
        "\n## Result validation against saboteurs\n\n\
         `cargo xtask sabotage --table` (also run by `cargo xtask bench`): the real scheduler and validator run one \
         job of {tasks} tasks on 100 simulated workers, one lease at a time each, in random order. Saboteurs return \
         a wrong output: *independent* ones each their own, *colluding* ones all the same wrong output for a task. \
         *Eager* ones cheat from the start; *patient* ones answer right until trusted (the attack adaptive trust \
         invites). A banned saboteur rejoins as a new worker. Accepted-wrong: tasks whose accepted result is wrong \
         when the job completes, per task; overhead: runs per task. Baselines in the same run: no validation, and \
         plain replication (two replicas of every task, no trust, no spot checks).\n\n\
         | saboteurs | kind | cheat rate | default policy: accepted-wrong | overhead | failed (no quorum) | no validation: accepted-wrong | plain replication: accepted-wrong | overhead |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    let mut rows: Vec<(&str, bool, &str, &str)> = vec![];
    for f in ["0.01", "0.1", "0.3"] {
        rows.push((f, false, "eager", "1"));
        rows.push((f, true, "eager", "1"));
        rows.push((f, true, "patient", "1"));
    }
    rows.push(("0.1", true, "patient", "0.5"));
    rows.push(("0.1", true, "patient", "0.1"));
    let mut goal = vec![];
    for (f, collude, strategy, cheat) in rows {
        let mut base = vec!["--tasks", &tasks, "--saboteurs", f, "--strategy", strategy, "--rate", cheat];
        if collude {
            base.push("--collude");
        }
        let with = |extra: &[&str]| figures(&[base.as_slice(), extra].concat());
        let (d, n, p) = (with(&[])?, with(NONE)?, with(PLAIN)?);
        let kind = format!("{} {strategy}", if collude { "colluding" } else { "independent" });
        let pct = |s: &str| format!("{}%", (s.parse::<f64>().unwrap_or(0.0) * 100.0).round());
        md.push_str(&format!(
            "| {} | {kind} | {cheat} | {} | {:.2}x | {} | {} | {} | {:.2}x |\n",
            pct(f),
            rate(&d),
            d.overhead,
            d.failed,
            rate(&n),
            rate(&p),
            p.overhead
        ));
        eprintln!("xtask: sabotage {f} {kind} rate {cheat}: {} at {:.2}x", rate(&d), d.overhead);
        if (f, collude, cheat) == ("0.1", true, "1") {
            goal.push((strategy, d));
        }
    }
    md.push_str("\n| target: 10% colluding saboteurs, accepted-wrong ≤ 1e-4 at ≤ 1.5x overhead | measured | |\n| --- | --- | --- |\n");
    for (strategy, d) in goal {
        let met = (d.wrong as f64 / d.tasks as f64) <= 1e-4 && d.overhead <= 1.5;
        md.push_str(&format!(
            "| {strategy} saboteurs that cheat on every task | {} at {:.2}x | {} |\n",
            rate(&d),
            d.overhead,
            if met { "met" } else { "MISSED" }
        ));
    }
    md.push_str(READING);
    Ok(md)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "--table") {
        let tasks = crate::flag_value(args, "--tasks")?.unwrap_or("100000").parse()?;
        print!("{}", table(tasks)?);
        return Ok(());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    print!("{}", simulate(&args)?);
    Ok(())
}
