//! A blocking client for the job owners' HTTP API.

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

pub struct Api {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

/// A response's status and JSON body (or `{"raw": text}` when it is not JSON).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// A task's final record: (task, status, stdout bytes, error).
pub type Record = (u32, String, Vec<u8>, Option<String>);

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api { http: reqwest::blocking::Client::new(), base: base.trim_end_matches('/').into(), token: token.into() }
    }

    /// The same client with another timeout per request (30 s by default).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Api {
        self.http = reqwest::blocking::Client::builder().timeout(timeout).build().expect("a plain HTTP client");
        self
    }

    fn reply(resp: reqwest::blocking::Response) -> anyhow::Result<Reply> {
        let status = resp.status().as_u16();
        let text = resp.text()?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
        Ok(Reply { status, body })
    }

    /// A raw request with a chosen Authorization header (or none).
    pub fn request(&self, method: &str, path: &str, auth: Option<&str>, body: Vec<u8>) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method.parse()?, format!("{}{path}", self.base)).body(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        Self::reply(req.send()?)
    }

    /// A request with more headers (a client named in `X-Forwarded-For`, say).
    pub fn request_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method.parse()?, format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        Self::reply(req.send()?)
    }

    fn ok(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let r = self.request(method, path, Some(&format!("Bearer {}", self.token)), body)?;
        if !(200..300).contains(&r.status) {
            bail!("{method} {path} answered {}: {}", r.status, r.body);
        }
        Ok(r.body)
    }

    pub fn upload(&self, module: &[u8]) -> anyhow::Result<String> {
        let v = self.ok("POST", "/api/modules", module.to_vec())?;
        Ok(v["hash"].as_str().context("hash")?.to_string())
    }

    /// Uploads a task input; its hex SHA-256.
    pub fn upload_blob(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let v = self.ok("POST", "/api/blobs", bytes.to_vec())?;
        Ok(v["hash"].as_str().context("hash")?.to_string())
    }

    /// Posts a job request as given (to see how it is answered).
    pub fn post_job(&self, body: &Value) -> anyhow::Result<Reply> {
        self.request("POST", "/api/jobs", Some(&format!("Bearer {}", self.token)), serde_json::to_vec(body)?)
    }

    /// Creates a job from stdin byte strings, with the same args for every task.
    pub fn create_job(&self, module: &str, stdins: &[Vec<u8>], args: &[String], limits: Value) -> anyhow::Result<u64> {
        let tasks: Vec<Value> = stdins.iter().map(|s| json!({ "stdin": B64.encode(s), "args": args })).collect();
        let body = json!({ "module": module, "tasks": tasks, "limits": limits });
        let v = self.ok("POST", "/api/jobs", serde_json::to_vec(&body)?)?;
        v["id"].as_u64().context("job id")
    }

    pub fn status(&self, job: u64) -> anyhow::Result<Value> {
        self.ok("GET", &format!("/api/jobs/{job}"), vec![])
    }

    /// Every final record of a job.
    pub fn results(&self, job: u64) -> anyhow::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.ok("GET", &format!("/api/jobs/{job}/results?limit=1000{after}"), vec![])?;
            let page = page.as_array().context("results array")?.clone();
            let Some(last) = page.last() else { break };
            after = format!("&after={}", last["task"]);
            for r in page {
                out.push((
                    r["task"].as_u64().context("task")? as u32,
                    r["status"].as_str().context("status")?.to_string(),
                    B64.decode(r["stdout"].as_str().unwrap_or(""))?,
                    r["error"].as_str().map(str::to_owned),
                ));
            }
        }
        Ok(out)
    }

    /// Every final record of a job as the API returns it.
    pub fn results_json(&self, job: u64) -> anyhow::Result<Vec<Value>> {
        let page = self.ok("GET", &format!("/api/jobs/{job}/results?limit=10000"), vec![])?;
        Ok(page.as_array().context("results array")?.clone())
    }

    pub fn stats(&self) -> anyhow::Result<Value> {
        self.ok("GET", "/api/stats", vec![])
    }
}
