//! `idlecore status JOB`: a job's state, counts, and why failed tasks failed.

use crate::client::{Client, ClientArgs};
use crate::model::TaskStatus;

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
