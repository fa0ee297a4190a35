//! Functions: a WASI command deployed under a name and called over HTTP, one
//! call one run (stdin in, stdout out). What a function is (its name, module,
//! limits, environment, who may call it and how its answers are checked),
//! the rules a deployment and a call must meet, and the figures kept of its
//! calls. Nothing here runs a call: see `services::functions`.

use super::model::{JobLimits, TaskInput};
use super::tasks;
use idlecore_protocol::limits::MAX_FRAME_BYTES;
use idlecore_protocol::{Sha256Hash, TaskLimits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Longest function name.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest timeout a function may have: calls are answered while the caller waits.
pub const MAX_TIMEOUT_MS: u32 = 15 * 60 * 1000;

/// Checks a function's name: 1–64 of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter or digit (it appears in URLs and in `idlecore fn` commands as is).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !first_ok || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} is not a function name: 1 to {MAX_NAME_BYTES} of a-z, 0-9, '-' and '_', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// What a caller may be given from an untrusted worker's run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Verify {
    /// An answer from a worker not yet trusted is returned only once a second
    /// run (another worker's, or the coordinator's) agrees.
    #[default]
    Trusted,
    /// K agreeing runs on distinct workers before answering.
    Replicas(u32),
    /// Answer at once; re-run this fraction of calls on the coordinator
    /// afterwards and ban a worker whose answer differed.
    Sample(f64),
    /// Every worker's answer is taken as it comes (a pool the owner trusts).
    None,
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::Trusted => write!(f, "trusted"),
            Verify::Replicas(k) => write!(f, "replicas:{k}"),
            Verify::Sample(r) => write!(f, "sample:{r}"),
            Verify::None => write!(f, "none"),
        }
    }
}

impl FromStr for Verify {
    type Err = String;

    fn from_str(s: &str) -> Result<Verify, String> {
        let bad = || format!("{s:?} is not a verify policy: trusted, replicas:K (K from 1 to 10), sample:R (R from 0 to 1) or none");
        Ok(match s.split_once(':') {
            None if s == "trusted" => Verify::Trusted,
            None if s == "none" => Verify::None,
            Some(("replicas", k)) => match k.parse::<u32>() {
                Ok(k @ 1..=10) => Verify::Replicas(k),
                _ => return Err(bad()),
            },
            Some(("sample", r)) => match r.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Verify::Sample(r),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        })
    }
}

impl Serialize for Verify {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Verify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Verify, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A deployment as the owner sends it (`PUT /api/functions/{name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The module's hash, as `POST /api/modules` answered (either form).
    pub module: Sha256Hash,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "defaults::max_memory_mib")]
    pub max_memory_mib: u32,
    /// Instructions one call may execute; 0 means no limit.
    #[serde(default)]
    pub fuel: u64,
    #[serde(default = "defaults::max_output_bytes")]
    pub max_output_bytes: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub verify: Verify,
    /// Anyone may call it, without a token.
    #[serde(default)]
    pub public: bool,
}

mod defaults {
    pub fn timeout_ms() -> u32 {
        30_000
    }
    pub fn max_memory_mib() -> u32 {
        256
    }
    pub fn max_output_bytes() -> u32 {
        6 * 1024 * 1024
    }
}

/// A deployed function, as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    /// The module as uploaded.
    pub module: Sha256Hash,
    /// Its sandboxed form: what runs.
    pub runnable: Sha256Hash,
    pub timeout_ms: u32,
    pub max_memory_mib: u32,
    pub fuel: u64,
    pub max_output_bytes: u32,
    pub env: BTreeMap<String, String>,
    pub verify: Verify,
    pub public: bool,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
}

impl DeployRequest {
    /// Checks the request; the message names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"));
        }
        if self.max_memory_mib == 0 || self.max_memory_mib > 4096 {
            return Err("max_memory_mib must be between 1 and 4096".into());
        }
        let max_out = (MAX_FRAME_BYTES - 64 * 1024) as u32;
        if self.max_output_bytes == 0 || self.max_output_bytes > max_out {
            return Err(format!("max_output_bytes must be between 1 and {max_out}"));
        }
        let env: Vec<(String, String)> = self.env.clone().into_iter().collect();
        tasks::check_task(&TaskInput { env, ..TaskInput::default() }).map_err(|e| format!("env: {e}"))
    }

    /// The function this request deploys as `name`, running `runnable`.
    pub fn into_function(self, name: String, runnable: Sha256Hash, deployed_at: u64) -> Function {
        Function {
            name,
            module: self.module,
            runnable,
            timeout_ms: self.timeout_ms,
            max_memory_mib: self.max_memory_mib,
            fuel: self.fuel,
            max_output_bytes: self.max_output_bytes,
            env: self.env,
            verify: self.verify,
            public: self.public,
            deployed_at,
        }
    }
}

impl Function {
    /// A call's limits, as a job with the same limits gives its tasks.
    pub fn task_limits(&self) -> TaskLimits {
        let limits = JobLimits {
            timeout_ms: self.timeout_ms,
            max_output_bytes: self.max_output_bytes,
            max_memory_mib: self.max_memory_mib,
            fuel: self.fuel,
            ..JobLimits::default()
        };
        limits.task_limits()
    }

    /// Checks one call's input (stdin and args) as a task's would be checked,
    /// with the function's environment.
    pub fn check_call(&self, stdin: &[u8], args: &[String]) -> Result<(), String> {
        // Only the sizes matter here: the bytes are not copied.
        if stdin.len() > MAX_FRAME_BYTES - 256 * 1024 {
            return Err(format!("the body (stdin) is larger than {} bytes", MAX_FRAME_BYTES - 256 * 1024));
        }
        let env = self.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        tasks::check_task(&TaskInput { args: args.to_vec(), env, ..TaskInput::default() })
    }
}

/// Where a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedBy {
    /// The coordinator's own native slots.
    Coordinator,
    /// A visitor's browser.
    Browser,
    /// A native worker (`idlecore worker`).
    NativeWorker,
}

impl ServedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ServedBy::Coordinator => "coordinator",
            ServedBy::Browser => "browser",
            ServedBy::NativeWorker => "native-worker",
        }
    }
}

/// How a call ended, as its figures count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// The function ran to an exit code (any).
    Answered { served_by: ServedBy, cold: bool },
    /// The function failed (trap, fuel, memory, output limit).
    Failed { served_by: ServedBy, cold: bool },
    /// No answer within the deadline (504).
    TimedOut,
    /// Refused for overload (429).
    Rejected,
}

/// A function's call figures since the coordinator started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallStats {
    pub calls: u64,
    pub answered: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub rejected: u64,
    pub served_by_coordinator: u64,
    pub served_by_browser: u64,
    pub served_by_native_worker: u64,
    /// Runs that had to make a new instance (or compile) first.
    pub cold_starts: u64,
    #[serde(skip)]
    latency: Histogram,
}

/// The figures as `fn stats` shows them, percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    #[serde(flatten)]
    pub counts: CallStats,
    /// Share of runs that found an instance ready (1.0 with no runs).
    pub warm_share: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl CallStats {
    /// Counts one call that took `micros` from arrival to answer.
    pub fn record(&mut self, end: CallEnd, micros: u64) {
        self.calls += 1;
        let (served_by, cold) = match end {
            CallEnd::Answered { served_by, cold } => {
                self.answered += 1;
                (served_by, cold)
            }
            CallEnd::Failed { served_by, cold } => {
                self.failed += 1;
                (served_by, cold)
            }
            CallEnd::TimedOut => {
                self.timed_out += 1;
                return;
            }
            CallEnd::Rejected => {
                self.rejected += 1;
                return;
            }
        };
        match served_by {
            ServedBy::Coordinator => self.served_by_coordinator += 1,
            ServedBy::Browser => self.served_by_browser += 1,
            ServedBy::NativeWorker => self.served_by_native_worker += 1,
        }
        self.cold_starts += cold as u64;
        self.latency.record(micros);
    }

    pub fn view(&self) -> StatsView {
        let runs = self.answered + self.failed;
        let warm_share = if runs == 0 { 1.0 } else { (runs - self.cold_starts) as f64 / runs as f64 };
        let ms = |q| self.latency.quantile(q).map(|us| us as f64 / 1000.0);
        StatsView { counts: self.clone(), warm_share, p50_ms: ms(0.5), p99_ms: ms(0.99) }
    }
}

/// Latencies in microseconds, in buckets an eighth of a power of two wide
/// (a quantile is off by at most 12.5%), in constant memory.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 3;

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; (64 << SUB_BITS) as usize], total: 0 }
    }
}

impl Histogram {
    fn bucket(v: u64) -> usize {
        if v < (1 << SUB_BITS) {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let sub = (v >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (((exp - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
    }

    /// The largest value a bucket holds.
    fn upper(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < (1 << SUB_BITS) {
            return b;
        }
        let exp = (b >> SUB_BITS) + SUB_BITS as u64 - 1;
        let sub = b & ((1 << SUB_BITS) - 1);
        let low = (1u64 << exp) | (sub << (exp - SUB_BITS as u64));
        low + ((1u64 << (exp - SUB_BITS as u64)) - 1)
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.total += 1;
    }

    /// The value at quantile `q` (0..=1), as its bucket's upper bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_safe_and_bounded() {
        for good in ["thumb", "a", "0-x_y", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "_a", "A", "a/b", "a b", "é", "a.b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verify_policies_parse_and_print_back() {
        for text in ["trusted", "none", "replicas:2", "replicas:10", "sample:0.05", "sample:1", "sample:0"] {
            let v: Verify = text.parse().unwrap();
            assert_eq!(v.to_string().parse::<Verify>().unwrap(), v, "{text}");
        }
        assert_eq!("replicas:3".parse::<Verify>().unwrap(), Verify::Replicas(3));
        for bad in ["", "trust", "replicas", "replicas:0", "replicas:11", "replicas:x", "sample:1.5", "sample:-0.1", "sample:nan", "none:1"]
        {
            let e = bad.parse::<Verify>().unwrap_err();
            assert!(e.contains("not a verify policy"), "{bad}: {e}");
        }
    }

    #[test]
    fn deploy_requests_are_checked_field_by_field() {
        let ok: DeployRequest = serde_json::from_str(&format!(r#"{{"module":"{}"}}"#, Sha256Hash::of(b"m"))).unwrap();
        assert!(ok.check().is_ok());
        assert_eq!((ok.timeout_ms, ok.verify, ok.public), (30_000, Verify::Trusted, false));
        let with = |f: &dyn Fn(&mut DeployRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            r.check().unwrap_err()
        };
        assert!(with(&|r| r.timeout_ms = 0).contains("timeout_ms"));
        assert!(with(&|r| r.timeout_ms = MAX_TIMEOUT_MS + 1).contains("timeout_ms"));
        assert!(with(&|r| r.max_memory_mib = 0).contains("max_memory_mib"));
        assert!(with(&|r| r.max_output_bytes = 17 << 20).contains("max_output_bytes"));
        assert!(with(&|r| {
            r.env.insert("A=B".into(), "x".into());
        })
        .contains("env"));
        let unknown = serde_json::from_str::<DeployRequest>(&format!(r#"{{"module":"{}","timeout":5}}"#, Sha256Hash::of(b"m")));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
        let policy = serde_json::from_str::<DeployRequest>(&format!(r#"{{"module":"{}","verify":"most"}}"#, Sha256Hash::of(b"m")));
        assert!(policy.unwrap_err().to_string().contains("not a verify policy"));
    }

    #[test]
    fn histogram_quantiles_are_within_an_eighth() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0), (0.001, 10.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(got >= exact && got <= exact * 1.125 + 1.0, "q {q}: {got} vs {exact}");
        }
        // Every value lands in a bucket whose bounds hold it.
        for v in [0, 1, 7, 8, 9, 15, 16, 17, 1000, 1 << 40, u64::MAX] {
            let b = Histogram::bucket(v);
            assert!(Histogram::upper(b) >= v, "{v}");
            assert!(b == 0 || Histogram::upper(b - 1) < v, "{v}");
        }
    }

    #[test]
    fn stats_count_where_calls_were_served_and_how_warm() {
        let mut s = CallStats::default();
        s.record(CallEnd::Answered { served_by: ServedBy::Coordinator, cold: true }, 900);
        for _ in 0..3 {
            s.record(CallEnd::Answered { served_by: ServedBy::Browser, cold: false }, 1_000);
        }
        s.record(CallEnd::Failed { served_by: ServedBy::NativeWorker, cold: false }, 2_000);
        s.record(CallEnd::TimedOut, 0);
        s.record(CallEnd::Rejected, 0);
        let v = s.view();
        assert_eq!((v.counts.calls, v.counts.answered, v.counts.failed, v.counts.timed_out, v.counts.rejected), (7, 4, 1, 1, 1));
        assert_eq!((v.counts.served_by_coordinator, v.counts.served_by_browser, v.counts.served_by_native_worker), (1, 3, 1));
        assert_eq!(v.warm_share, 0.8);
        assert!(v.p50_ms.unwrap() >= 1.0 && v.p50_ms.unwrap() < 1.2, "{v:?}");
        assert!(v.p99_ms.unwrap() >= 2.0 && v.p99_ms.unwrap() < 2.3, "{v:?}");
    }
}
