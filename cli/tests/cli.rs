//! `idlecore submit` and `idlecore status` against a real coordinator, with a
//! native protocol worker doing the work.

mod common;

use idlecore_e2e::proto_worker::Received;
use idlecore_e2e::ProtoWorker;
use idlecore_protocol::*;
use std::process::Command;

/// Answers every lease: stdin reversed, except stdin "boom", which traps.
fn serve_leases(addr: std::net::SocketAddr, expect: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut w, _) = ProtoWorker::join(addr, 2).unwrap();
        let mut answered = 0;
        while answered < expect {
            match w.recv().unwrap() {
                Received::Msg(CoordinatorMessage::Lease(l)) => {
                    answered += 1;
                    let reply = if l.stdin == b"boom" {
                        WorkerMessage::Failure(TaskFailure {
                            lease: l.lease,
                            kind: FailureKind::Trap,
                            message: "unreachable executed".into(),
                        })
                    } else {
                        let mut out = l.stdin.clone();
                        out.reverse();
                        common::result(l.lease, &out)
                    };
                    w.send(&reply).unwrap();
                }
                Received::Msg(_) => {}
                Received::Closed => return,
            }
        }
        // Stay connected until the acks are in.
        std::thread::sleep(std::time::Duration::from_millis(500));
    })
}

fn cli(c: &idlecore_e2e::Coordinator) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.env("IDLECORE_COORDINATOR", c.base_url()).env("IDLECORE_TOKEN", common::TOKEN);
    cmd
}

#[test]
fn submit_writes_each_output_and_status_explains_failures() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(&dir.path().join("data"));
    let module = dir.path().join("task.wasm");
    std::fs::write(&module, common::module(1)).unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    for (name, body) in [("a.txt", "abc"), ("b.txt", "xyz"), ("c.txt", "boom")] {
        std::fs::write(inputs.join(name), body).unwrap();
    }
    let out = dir.path().join("out");
    // c.txt traps on each of its 2 attempts: 4 leases in all.
    let worker = serve_leases(c.addr, 4);
    let submit = cli(&c)
        .arg("submit")
        .arg(&module)
        .arg("--inputs")
        .arg(&inputs)
        .arg("--out")
        .arg(&out)
        .args(["--max-attempts", "2"])
        .output()
        .unwrap();
    worker.join().unwrap();
    let stdout = String::from_utf8_lossy(&submit.stdout);
    let stderr = String::from_utf8_lossy(&submit.stderr);
    assert!(!submit.status.success(), "a failed task makes submit fail");
    assert!(stdout.contains("job 1: 3 tasks"), "{stdout}");
    assert!(stdout.contains("2 done, 1 failed of 3"), "{stdout}");
    assert!(stderr.contains("idlecore status 1"), "{stderr}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"cba");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"zyx");
    let error = std::fs::read_to_string(out.join("c.txt.error")).unwrap();
    assert_eq!(error, "trap: unreachable executed\ntrap: unreachable executed");

    let status = cli(&c).args(["status", "1"]).output().unwrap();
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("job 1 completed: 2 done, 1 failed"), "{text}");
    assert!(text.contains("task 2 failed:\n  trap: unreachable executed"), "{text}");
}

#[test]
fn line_inputs_make_one_task_per_line_and_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(&dir.path().join("data"));
    let module = dir.path().join("task.wasm");
    std::fs::write(&module, common::module(2)).unwrap();
    let lines = dir.path().join("lines.txt");
    std::fs::write(&lines, "one\ntwo\n\nthree\n").unwrap();
    let worker = serve_leases(c.addr, 3);
    let out = dir.path().join("out");
    let submit = cli(&c).arg("submit").arg(&module).arg("--inputs").arg(&lines).arg("--out").arg(&out).output().unwrap();
    worker.join().unwrap();
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    // Each line keeps its newline as the task's stdin; output names are line numbers.
    assert_eq!(std::fs::read(out.join("0")).unwrap(), b"\neno");
    assert_eq!(std::fs::read(out.join("2")).unwrap(), b"\neerht");

    let bad_token = cli(&c).env("IDLECORE_TOKEN", "nope").args(["status", "1"]).output().unwrap();
    assert!(!bad_token.status.success());
    assert!(String::from_utf8_lossy(&bad_token.stderr).contains("401"));
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let refused = cli(&c).arg("submit").arg(&garbage).arg("--inputs").arg(&lines).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a valid WebAssembly module"));
}

/// `--file` gives every task one file, uploaded once; an input over
/// `--blob-over-kib` goes as a blob too: the leases name both by hash.
#[test]
fn shared_files_and_large_inputs_are_uploaded_once_as_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::start(&dir.path().join("data"));
    let module = dir.path().join("task.wasm");
    std::fs::write(&module, common::module(3)).unwrap();
    let shared = dir.path().join("table.bin");
    std::fs::write(&shared, vec![5u8; 70_000]).unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let big = vec![b'x'; 2048];
    std::fs::write(inputs.join("big"), &big).unwrap();
    std::fs::write(inputs.join("small"), b"s").unwrap();
    let addr = c.addr;
    let worker = std::thread::spawn(move || {
        let (mut w, _) = ProtoWorker::join(addr, 2).unwrap();
        let leases = [w.next_lease().unwrap(), w.next_lease().unwrap()];
        for l in &leases {
            w.send(&common::result(l.lease, b"ok")).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        leases
    });
    let submit = cli(&c)
        .arg("submit")
        .arg(&module)
        .arg("--inputs")
        .arg(&inputs)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--file")
        .arg(format!("table.bin={}", shared.display()))
        .args(["--blob-over-kib", "1", "--no-validation"])
        .output()
        .unwrap();
    let mut leases = worker.join().unwrap();
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    leases.sort_by_key(|l| l.task);
    let table =
        InputBlob { hash: Sha256Hash::of(&[5u8; 70_000]), size: 70_000, target: BlobTarget::File { dir: 0, path: "table.bin".into() } };
    // Inputs are read in name order: "big" is task 0.
    let stdin = InputBlob { hash: Sha256Hash::of(&big), size: 2048, target: BlobTarget::Stdin };
    assert_eq!(leases[0].blobs, [stdin, table.clone()]);
    assert!(leases[0].stdin.is_empty());
    assert_eq!(leases[1].blobs, [table]);
    assert_eq!(leases[1].stdin, b"s");
    let bad = cli(&c).arg("submit").arg(&module).arg("--inputs").arg(&inputs).args(["--file", "no-equals-sign"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected NAME=PATH"));
}
