//! `cargo xtask demo`: the whole path on one machine. A coordinator on
//! embedded SQLite serves the demo site; headless Chromium visitors load it
//! through its one script tag; the Mandelbrot job is submitted with
//! `idlecore submit`, and its tiles become one PNG.

use crate::{build, flag_value, picture, root, tools};
use anyhow::{bail, Context};
use idlecore_e2e::{mandelbrot_inputs, Coordinator, CoordinatorConfig, Visitor};
use std::process::Command;

/// Tiles per side of the demo picture (the job has TILES² tasks).
const TILES: u32 = 8;
const TASK_ARGS: &[&str] = &["--tiles", "8", "--size", "64", "--iter", "800"];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let visitors: usize = flag_value(args, "--visitors")?.map(str::parse).transpose().context("--visitors")?.unwrap_or(2);
    let port: u16 = flag_value(args, "--port")?.map(str::parse).transpose().context("--port")?.unwrap_or(0);
    let once = args.iter().any(|a| a == "--once");

    tools::ensure()?;
    let paths = build::all()?;
    let dir = root().join("target/demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data");
    let coordinator = Coordinator::start(&CoordinatorConfig {
        bin: &paths.bin,
        data: &data,
        token: None,
        addr: Some(([127, 0, 0, 1], port).into()),
        site: Some((&paths.www, &paths.pkg)),
        heartbeat_ms: 5000,
        extra: &[],
    })?;
    let url = coordinator.base_url();
    println!("demo site:       {url}/   (open it in a browser to join as a worker)");
    println!("job-owner token: {}", coordinator.token);
    println!("coordinator log: {}", data.join("coordinator.log").display());

    let mut browsers = Vec::new();
    for _ in 0..visitors {
        browsers.push(Visitor::open(&format!("{url}/visitor.html"))?);
    }
    println!("visitors:        {visitors} headless Chromium page(s)");

    let inputs = dir.join("tiles.txt");
    std::fs::write(&inputs, mandelbrot_inputs(TILES).concat())?;
    let out = dir.join("out");
    let mut submit = Command::new(&paths.bin);
    submit.arg("submit").arg(paths.tasks.join("mandelbrot.wasm")).arg("--inputs").arg(&inputs).arg("--out").arg(&out).args([
        "--coordinator",
        &url,
        "--token",
        &coordinator.token,
    ]);
    for a in TASK_ARGS {
        submit.arg(format!("--arg={a}"));
    }
    let status = submit.status().context("running idlecore submit")?;
    if !status.success() {
        bail!("the demo job failed (see {})", data.join("coordinator.log").display());
    }

    let mut names: Vec<_> = std::fs::read_dir(&out)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    names.sort();
    let tiles = names.iter().map(std::fs::read).collect::<Result<Vec<_>, _>>()?;
    let png = dir.join("mandelbrot.png");
    picture::assemble(&tiles, TILES as usize, &png)?;
    println!("picture:         {}", png.display());

    if once {
        drop(browsers);
        drop(coordinator);
        return Ok(());
    }
    println!("The coordinator keeps serving {url}/ ; press Ctrl-C to stop.");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
