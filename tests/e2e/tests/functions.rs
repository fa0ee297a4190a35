//! Functions through the real binary, as their users reach them: deployed
//! with `idlecore fn deploy`, called with curl and with `idlecore fn call`,
//! answered by the coordinator's native slots. Failures and refusals each
//! get their status (502, 504, 404, 400, 413, 401, 429); deployments survive
//! a restart; a caller that leaves withdraws its run.

use idlecore_e2e::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "functions-token";

fn coordinator(paths: &Paths, data: &std::path::Path, extra: &[&str]) -> Coordinator {
    Coordinator::start(&CoordinatorConfig { bin: &paths.bin, data, token: Some(TOKEN), addr: None, site: None, heartbeat_ms: 1000, extra })
        .expect("coordinator starts")
}

fn probe(paths: &Paths) -> String {
    paths.tasks.join("wasi-probe.wasm").display().to_string()
}

/// `idlecore fn ARGS...` against `c`, with `stdin`.
fn idlecore_fn(paths: &Paths, c: &Coordinator, token: Option<&str>, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(&paths.bin);
    cmd.arg("fn").args(args).env("IDLECORE_COORDINATOR", c.base_url()).env_remove("IDLECORE_TOKEN");
    if let Some(t) = token {
        cmd.env("IDLECORE_TOKEN", t);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("idlecore runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn deploy(paths: &Paths, c: &Coordinator, name: &str, flags: &[&str]) {
    let module = probe(paths);
    let mut args = vec!["deploy", name, &module];
    args.extend_from_slice(flags);
    let out = idlecore_fn(paths, c, Some(TOKEN), &args, b"");
    assert!(out.status.success(), "deploy failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A curl call: (status, lower-cased headers, body).
fn curl(url: &str, extra: &[&str], body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (input, head) = (dir.path().join("in"), dir.path().join("head"));
    std::fs::write(&input, body).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-D"])
        .arg(&head)
        .arg("--data-binary")
        .arg(format!("@{}", input.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    (status, headers, out.stdout)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_function_is_deployed_called_listed_and_removed() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, dir.path(), &["--native-slots", "1"]);
    deploy(&paths, &c, "probe", &["--env", "GREETING=hi", "--public"]);

    // The CLI: stdin in, stdout and stderr out, the exit code as its own.
    let out = idlecore_fn(&paths, &c, None, &["call", "probe", "report", "a", "-b c"], b"some input");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("args: a -b c\n"), "{stdout}");
    assert!(stdout.contains("env: GREETING=hi\n"), "{stdout}");
    assert!(stdout.contains("stdin: some input\n"), "{stdout}");
    assert_eq!(text(&out.stderr), "stderr-line\n");
    let out = idlecore_fn(&paths, &c, None, &["call", "probe", "exit", "7"], b"");
    assert_eq!(out.status.code(), Some(7));

    // curl: the body is stdout, the rest in headers.
    let url = format!("{}/fn/probe?arg=report&arg=x%20y", c.base_url());
    let (status, headers, body) = curl(&url, &[], b"from curl");
    assert_eq!(status, 200, "{}", text(&body));
    assert!(text(&body).contains("args: x y\nenv: GREETING=hi\nstdin: from curl\n"), "{}", text(&body));
    assert_eq!(header(&headers, "idlecore-exit-code"), Some("0"));
    assert_eq!(header(&headers, "idlecore-served-by"), Some("coordinator"));
    assert!(header(&headers, "idlecore-fuel-used").unwrap().parse::<u64>().unwrap() > 1000, "{headers:?}");
    assert!(header(&headers, "idlecore-elapsed-ms").unwrap().parse::<f64>().unwrap() > 0.0);
    // Deployed just now: the module was compiled at deploy, the instance is warm by now.
    assert_eq!(header(&headers, "idlecore-cold-start"), Some("false"));
    // Seeded per call: two calls see different random numbers.
    let random = |b: &[u8]| text(b).lines().find(|l| l.starts_with("random: ")).unwrap().to_string();
    let (_, _, again) = curl(&url, &[], b"from curl");
    assert_ne!(random(&body), random(&again));

    let list = idlecore_fn(&paths, &c, Some(TOKEN), &["list"], b"");
    let list_text = text(&list.stdout);
    assert!(list_text.contains("probe") && list_text.contains("public") && list_text.contains("trusted"), "{list_text}");
    let stats = text(&idlecore_fn(&paths, &c, Some(TOKEN), &["stats", "probe"], b"").stdout);
    assert!(stats.contains("calls 4: 4 answered, 0 failed"), "{stats}");
    assert!(stats.contains("served by the coordinator 4, browsers 0, native workers 0"), "{stats}");
    let info = c.api().request("GET", "/api/functions/probe", Some(&format!("Bearer {TOKEN}")), vec![]).unwrap();
    assert_eq!(info.body["stats"]["calls"], 4);
    assert!(info.body["stats"]["p99_ms"].as_f64().unwrap() > 0.0, "{}", info.body);

    let rm = idlecore_fn(&paths, &c, Some(TOKEN), &["rm", "probe"], b"");
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    let (status, _, body) = curl(&url, &[], b"");
    assert_eq!(status, 404, "{}", text(&body));
    assert!(text(&body).contains("function \\\"probe\\\" not found"), "{}", text(&body));
    let gone = idlecore_fn(&paths, &c, None, &["call", "probe", "report"], b"");
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone.stderr).contains("404"), "{}", text(&gone.stderr));
}

#[test]
fn failures_and_refusals_each_get_their_status() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, dir.path(), &["--native-slots", "1", "--max-call-mib", "1"]);
    deploy(&paths, &c, "p", &["--timeout", "1", "--memory", "32", "--max-output-kib", "64"]);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let url = |q: &str| format!("{}/fn/p?{q}", c.base_url());

    // Not public: the token, checked before the body is read.
    let (status, headers, _) = curl(&url("arg=exit&arg=3"), &[], b"");
    assert_eq!((status, header(&headers, "www-authenticate")), (401, Some("Bearer")));
    let (status, headers, _) = curl(&url("arg=exit&arg=3"), &["-H", "Authorization: Bearer wrong"], b"");
    assert_eq!(status, 401, "{headers:?}");
    let (status, headers, _) = curl(&url("arg=exit&arg=3"), &["-H", &auth], b"");
    assert_eq!((status, header(&headers, "idlecore-exit-code")), (200, Some("3")));

    // The function's own failures: 502 with their kind.
    for (args, kind) in [("arg=trap", "trap"), ("arg=flood&arg=1000000", "output_limit"), ("arg=hog&arg=64", "memory_limit")] {
        let (status, headers, body) = curl(&url(args), &["-H", &auth], b"");
        assert_eq!(status, 502, "{args}: {}", text(&body));
        assert_eq!(header(&headers, "idlecore-failure"), Some(kind), "{args}: {}", text(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], kind);
        assert!(v["error"].as_str().unwrap().starts_with("the function failed"), "{v}");
    }
    let out = idlecore_fn(&paths, &c, Some(TOKEN), &["call", "p", "trap"], b"");
    assert_eq!(out.status.code(), Some(134));
    assert!(text(&out.stderr).contains("the function failed: trap"), "{}", text(&out.stderr));

    // Past the deadline: 504, at about the timeout, and the slot is free again.
    let started = Instant::now();
    let (status, _, body) = curl(&url("arg=spin"), &["-H", &auth], b"");
    let took = started.elapsed();
    assert_eq!(status, 504, "{}", text(&body));
    assert!(text(&body).contains("ran past its timeout of 1000 ms"), "{}", text(&body));
    assert!(took >= Duration::from_millis(1000) && took < Duration::from_secs(10), "{took:?}");
    let (status, _, _) = curl(&url("arg=exit&arg=0"), &["-H", &auth], b"");
    assert_eq!(status, 200);

    // Bad input.
    let (status, _, body) = curl(&format!("{}/fn/nothing", c.base_url()), &["-H", &auth], b"");
    assert_eq!(status, 404, "{}", text(&body));
    let (status, _, body) = curl(&url("arg=exit&x=1"), &["-H", &auth], b"");
    assert_eq!(status, 400, "{}", text(&body));
    assert!(text(&body).contains("unknown query parameter"), "{}", text(&body));
    let (status, _, body) = curl(&url("arg=report"), &["-H", &auth], &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(status, 413, "{}", text(&body));

    let api = c.api();
    let module = api.upload(&std::fs::read(probe(&paths)).unwrap()).unwrap();
    let put = |name: &str, body: serde_json::Value| {
        api.request("PUT", &format!("/api/functions/{name}"), Some(&format!("Bearer {TOKEN}")), body.to_string().into_bytes()).unwrap()
    };
    let r = put("Bad.Name", serde_json::json!({ "module": module }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("not a function name"), "{}", r.body);
    let r = put("ok", serde_json::json!({ "module": module, "verify": "majority" }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("not a verify policy"), "{}", r.body);
    let r = put("ok", serde_json::json!({ "module": "00".repeat(32) }));
    assert_eq!(r.status, 404, "{}", r.body);
    let reactor = api.upload(&wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "run")))"#).unwrap()).unwrap();
    let r = put("ok", serde_json::json!({ "module": reactor }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("WASI command"), "{}", r.body);
    let r = api.request("PUT", "/api/functions/ok", None, serde_json::json!({ "module": module }).to_string().into_bytes()).unwrap();
    assert_eq!(r.status, 401);
    let out = idlecore_fn(&paths, &c, Some(TOKEN), &["deploy", "ok", &probe(&paths), "--verify", "replicas:0"], b"");
    assert!(!out.status.success() && text(&out.stderr).contains("not a verify policy"), "{}", text(&out.stderr));

    // Every call counted where it ended.
    let info = api.request("GET", "/api/functions/p", Some(&format!("Bearer {TOKEN}")), vec![]).unwrap();
    let s = &info.body["stats"];
    assert_eq!((s["answered"].as_u64(), s["failed"].as_u64(), s["timed_out"].as_u64()), (Some(2), Some(4), Some(1)), "{s}");
}

#[test]
fn overload_is_refused_with_429_and_every_accepted_call_is_answered_once() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, dir.path(), &["--native-slots", "1", "--max-queued-calls-per-function", "2"]);
    let api = c.api();
    let mandelbrot = api.upload(&std::fs::read(paths.tasks.join("mandelbrot.wasm")).unwrap()).unwrap();
    let r = api
        .request(
            "PUT",
            "/api/functions/tile",
            Some(&format!("Bearer {TOKEN}")),
            serde_json::json!({ "module": mandelbrot, "public": true, "timeout_ms": 120000 }).to_string().into_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    // One call takes long enough (a large tile) that the others arrive while it runs.
    let args = ["--tiles", "1", "--size", "256", "--iter", "4000"];
    let expected = run_native(&paths.native_tasks.join("mandelbrot"), &args.map(String::from), b"0 0").unwrap();
    let query: String = args.iter().map(|a| format!("arg={a}")).collect::<Vec<_>>().join("&");
    let url = format!("{}/fn/tile?{query}", c.base_url());
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&url, &[], b"0 0"))
        })
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for call in calls {
        let (status, headers, body) = call.join().unwrap();
        match status {
            200 => {
                answered += 1;
                assert!(body == expected, "a call's answer differs from the native build");
            }
            429 => {
                refused += 1;
                assert_eq!(header(&headers, "retry-after"), Some("1"));
                assert!(text(&body).contains("too many calls are waiting"), "{}", text(&body));
            }
            other => panic!("status {other}: {}", text(&body)),
        }
    }
    // One running and two waiting at most when the rest arrived.
    assert!(refused >= 1 && answered >= 3, "answered {answered}, refused {refused}");
    let info = api.request("GET", "/api/functions/tile", Some(&format!("Bearer {TOKEN}")), vec![]).unwrap();
    let s = &info.body["stats"];
    assert_eq!((s["calls"].as_u64(), s["answered"].as_u64(), s["rejected"].as_u64()), (Some(8), Some(answered), Some(refused)), "{s}");
    assert_eq!(s["served_by_coordinator"].as_u64(), Some(answered));
}

#[test]
fn deployments_survive_a_restart_and_a_departed_callers_run_is_withdrawn() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = coordinator(&paths, &data, &["--native-slots", "1"]);
    deploy(&paths, &c, "probe", &["--public", "--timeout", "60"]);
    let url = |c: &Coordinator, q: &str| format!("{}/fn/probe?{q}", c.base_url());
    assert_eq!(curl(&url(&c, "arg=exit&arg=5"), &[], b"").1.iter().find(|(k, _)| k == "idlecore-exit-code").unwrap().1, "5");
    c.kill();

    let c = coordinator(&paths, &data, &["--native-slots", "1"]);
    let (status, headers, body) = curl(&url(&c, "arg=report"), &[], b"after the restart");
    assert_eq!(status, 200, "{}", text(&body));
    assert!(text(&body).contains("stdin: after the restart"));
    // The module is compiled again after a restart: the first call is cold, the next warm.
    assert_eq!(header(&headers, "idlecore-cold-start"), Some("true"));
    assert_eq!(header(&curl(&url(&c, "arg=report"), &[], b"").1, "idlecore-cold-start"), Some("false"));

    // A caller that gives up on a run that would spin for a minute: the one
    // slot is free again at once, so the next call is answered quickly.
    let (status, _, _) = curl(&url(&c, "arg=spin"), &["--max-time", "1"], b"");
    assert_eq!(status, 0, "curl gave up");
    let started = Instant::now();
    let (status, _, _) = curl(&url(&c, "arg=exit&arg=0"), &[], b"");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(20), "the withdrawn run held the slot for {:?}", started.elapsed());
}

/// A test picture: a colour gradient with a disc, `w` by `h`.
fn picture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i64 - w as i64 / 2, y as i64 - h as i64 / 2);
        let disc = dx * dx + dy * dy < (h as i64 / 3).pow(2);
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, if disc { 255 } else { 40 }])
    })
}

fn encoded(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn the_thumbnailer_answers_as_its_native_build_does() {
    let paths = Paths::workspace();
    paths.check_built().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&paths, dir.path(), &["--native-slots", "1"]);
    let module = paths.tasks.join("thumbnail.wasm").display().to_string();
    let out = idlecore_fn(&paths, &c, Some(TOKEN), &["deploy", "thumb", &module, "--public", "--timeout", "20"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let native = paths.native_tasks.join("thumbnail");
    for (format, name) in [(image::ImageFormat::Png, "png"), (image::ImageFormat::Jpeg, "jpeg")] {
        let input = encoded(&picture(640, 480), format);
        let args = ["--width".to_string(), "160".to_string()];
        let expected = run_native(&native, &args, &input).unwrap();
        let (status, headers, body) = curl(&format!("{}/fn/thumb?arg=--width&arg=160", c.base_url()), &[], &input);
        assert_eq!(status, 200, "{name}: {}", text(&body));
        assert_eq!(header(&headers, "content-type"), Some("application/octet-stream"));
        assert!(body == expected, "{name}: the thumbnail differs from the native build's");
        let thumb = image::load_from_memory_with_format(&body, image::ImageFormat::Png).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (160, 120), "{name}");
    }
    // Not an image: the function's own error, its exit code 1.
    let out = idlecore_fn(&paths, &c, None, &["call", "thumb"], b"plain text");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a PNG or JPEG"), "{}", text(&out.stderr));
}
