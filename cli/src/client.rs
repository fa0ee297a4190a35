//! HTTP client for the job owners' API, used by the CLI. Speaks `https://`
//! too (rustls, with the system's roots or those `SSL_CERT_FILE` names).

use anyhow::{bail, Context};
use futures_util::StreamExt;
use idlecore_coordinator::domain::model::{BlobRef, JobRequest, JobStatus, ResultRecord};
use idlecore_protocol::Sha256Hash;

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Coordinator base URL.
    #[arg(long, env = "IDLECORE_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
    /// Job-owner bearer token (printed by `idlecore serve` on its first start).
    #[arg(long, env = "IDLECORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let token = args.token.clone().context("no token: pass --token or set IDLECORE_TOKEN")?;
        // Roots: the system's, or those in `SSL_CERT_FILE` / `SSL_CERT_DIR` (a private CA).
        let http = reqwest::Client::builder().build().context("setting up the HTTP client")?;
        Ok(Client { http, base: args.coordinator.trim_end_matches('/').to_string(), token })
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("coordinator answered {status}: {msg}")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads bytes to `path` (modules, blobs); the hash in the answer.
    async fn upload(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Sha256Hash> {
        let request = self.http.post(self.url(path)).bearer_auth(&self.token).body(bytes);
        let resp = request.send().await.with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        let v: serde_json::Value = Self::check(resp).await?.json().await?;
        let text = v["hash"].as_str().context("no hash in the answer")?;
        text.parse().map_err(|e| anyhow::anyhow!("the answer's hash {text:?} is {e}"))
    }

    /// Uploads a module; the hash jobs name it by.
    pub async fn upload_module(&self, bytes: Vec<u8>) -> anyhow::Result<Sha256Hash> {
        self.upload("/api/modules", bytes).await
    }

    /// Uploads a task input; the reference tasks name it by.
    pub async fn upload_blob(&self, bytes: Vec<u8>) -> anyhow::Result<BlobRef> {
        let size = bytes.len() as u64;
        Ok(BlobRef { hash: self.upload("/api/blobs", bytes).await?, size })
    }

    /// Creates the job; while the coordinator is full (503), waits as long as
    /// its Retry-After says and tries again.
    pub async fn create_job(&self, req: &JobRequest) -> anyhow::Result<u64> {
        loop {
            let resp = self.http.post(self.url("/api/jobs")).bearer_auth(&self.token).json(req).send().await?;
            if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(10)
                    .clamp(1, 300);
                eprintln!("the coordinator is full; retrying in {wait} s");
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                continue;
            }
            let v: serde_json::Value = Self::check(resp).await?.json().await?;
            return v["id"].as_u64().context("no id in the answer");
        }
    }

    pub async fn status(&self, job: u64) -> anyhow::Result<JobStatus> {
        let resp = self
            .http
            .get(self.url(&format!("/api/jobs/{job}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        Ok(Self::check(resp).await?.json().await?)
    }

    pub async fn results(&self, job: u64, after: Option<u32>) -> anyhow::Result<Vec<ResultRecord>> {
        let mut url = format!("/api/jobs/{job}/results?limit=1000");
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let resp = self.http.get(self.url(&url)).bearer_auth(&self.token).send().await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// Calls `each` for every final record of the job until the job ends.
    pub async fn stream_results(&self, job: u64, mut each: impl FnMut(ResultRecord) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let resp = self.http.get(self.url(&format!("/api/jobs/{job}/results/stream"))).bearer_auth(&self.token).send().await?;
        let mut body = Self::check(resp).await?.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.context("result stream broke")?);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                each(serde_json::from_slice(&line).context("bad record in the result stream")?)?;
            }
        }
        Ok(())
    }
}
