//! `idlecore status JOB`: a job's state, counts, and why failed tasks failed.

use crate::client::{Client, ClientArgs};
use idlecore_coordinator::domain::model::TaskStatus;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    pub job: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let s = client.status(args.job).await?;
    println!("job {} {}: {} done, {} failed, {} in flight, {} tasks", s.id, s.state, s.done, s.failed, s.in_flight, s.tasks);
    println!("module {}", s.module);
    let v = &s.validation;
    if v.is_on() {
        println!(
            "validation: {} replicas for untrusted workers (at most {}), trusted after {} verified results, spot checks {:.0}%",
            v.replicas,
            v.max_replicas,
            v.trust_threshold,
            v.spot_checks * 100.0
        );
        if let Some(c) = v.comparator {
            println!("outputs compared by the comparator module {c}");
        }
    } else {
        println!("validation: off (every result taken as it comes)");
    }
    if let Some(c) = &s.checks {
        let st = &c.stats;
        println!(
            "checks: {:.2}x compute per task; {} results, {} accepted alone, {} disagreements, {} inconclusive, \
             {} spot checks ({} failed), {} verified again, {} workers banned",
            c.overhead,
            st.results,
            st.accepted_alone,
            st.disagreements,
            st.inconclusive,
            st.spot_checks,
            st.spot_failures,
            st.reverified,
            st.banned
        );
        if st.comparator_errors > 0 {
            println!("comparator errors: {} comparisons failed (counted as disagreeing)", st.comparator_errors);
        }
    }
    if s.failed > 0 {
        let mut after = None;
        loop {
            let page = client.results(args.job, after).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.task);
            for r in page.iter().filter(|r| r.status == TaskStatus::Failed) {
                println!("task {} failed:", r.task);
                for line in r.error.as_deref().unwrap_or("").lines() {
                    println!("  {line}");
                }
            }
        }
    }
    Ok(())
}
