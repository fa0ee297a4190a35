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
    /// Public functions are called without one.
    token: Option<String>,
}

/// A function call's answer, as `idlecore fn call` shows it.
#[derive(Debug, serde::Deserialize)]
pub struct CallReply {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, with = "base64_bytes")]
    pub stdout: Vec<u8>,
    #[serde(default, with = "base64_bytes")]
    pub stderr: Vec<u8>,
    /// Set when the function failed (trap, fuel, memory, output limit).
    pub error: Option<String>,
}

mod base64_bytes {
    use base64::Engine as _;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        args.token.as_ref().context("no token: pass --token or set IDLECORE_TOKEN")?;
        Self::caller(args)
    }

    /// A client that sends the token if it has one (public functions need none).
    pub fn caller(args: &ClientArgs) -> anyhow::Result<Client> {
        // Roots: the system's, or those in `SSL_CERT_FILE` / `SSL_CERT_DIR` (a private CA).
        let http = reqwest::Client::builder().build().context("setting up the HTTP client")?;
        Ok(Client { http, base: args.coordinator.trim_end_matches('/').to_string(), token: args.token.clone() })
    }

    /// The coordinator's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = request.send().await.with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        Self::check(resp).await
    }

    /// Deploys a function; whether it is new, and the function as deployed.
    pub async fn deploy_function(&self, name: &str, spec: &serde_json::Value) -> anyhow::Result<(bool, serde_json::Value)> {
        let resp = self.send(self.request(reqwest::Method::PUT, &format!("/api/functions/{name}")).json(spec)).await?;
        let new = resp.status() == reqwest::StatusCode::CREATED;
        Ok((new, resp.json().await?))
    }

    pub async fn list_functions(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self.send(self.request(reqwest::Method::GET, "/api/functions")).await?.json().await?)
    }

    pub async fn function(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.send(self.request(reqwest::Method::GET, &format!("/api/functions/{name}"))).await?.json().await?)
    }

    pub async fn remove_function(&self, name: &str) -> anyhow::Result<()> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/api/functions/{name}"))).await?;
        Ok(())
    }

    /// Calls a function. Its own failure (a trap, a limit) is in the reply;
    /// the coordinator's refusals (unknown, overload, timeout) are errors.
    pub async fn call_function(&self, name: &str, args: &[String], stdin: Vec<u8>) -> anyhow::Result<CallReply> {
        let query: Vec<(&str, &str)> = args.iter().map(|a| ("arg", a.as_str())).collect();
        let request = self
            .request(reqwest::Method::POST, &format!("/fn/{name}"))
            .query(&query)
            .header(reqwest::header::ACCEPT, "application/vnd.idlecore.call+json")
            .body(stdin);
        let resp = request.send().await.with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::BAD_GATEWAY {
            return Ok(resp.json().await?);
        }
        Ok(Self::check(resp).await?.json().await?)
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
        let request = self.request(reqwest::Method::POST, path).body(bytes);
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
            let resp = self.request(reqwest::Method::POST, "/api/jobs").json(req).send().await?;
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
        Ok(self.send(self.request(reqwest::Method::GET, &format!("/api/jobs/{job}"))).await?.json().await?)
    }

    pub async fn results(&self, job: u64, after: Option<u32>) -> anyhow::Result<Vec<ResultRecord>> {
        let mut url = format!("/api/jobs/{job}/results?limit=1000");
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let resp = self.request(reqwest::Method::GET, &url).send().await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// Calls `each` for every final record of the job until the job ends.
    pub async fn stream_results(&self, job: u64, mut each: impl FnMut(ResultRecord) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let resp = self.request(reqwest::Method::GET, &format!("/api/jobs/{job}/results/stream")).send().await?;
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
