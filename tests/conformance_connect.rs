//! The Connect conformance suite (`connectrpc.com/conformance` v1.0.5)
//! against our `conformance-server` and `conformance-client`.
//!
//! * `connect_conformance_server_plaintext`: the suite's reference clients
//!   (Connect-Go's, and grpc-go's) call our server — gRPC natively, gRPC-Web
//!   through our gateway — over HTTP/1.1 and h2c: 711 cases.
//! * `connect_conformance_server_tls`: the same over TLS: 531 cases.
//! * `connect_conformance_client_h2c`: our client calls the suite's
//!   reference servers (Connect-Go's and grpc-go's) over h2c: 403 cases.
//! * `connect_conformance_client_tls`: with TLS as well: 632 cases.
//!
//! The configs are `tests/conformance/connect/*.yaml`; none has a
//! known-failing list, so any failing case fails the test, whose message is
//! the runner's own failure report. The case counts are checked too: a
//! config that silently selected fewer cases would otherwise pass.
//!
//! The runner is installed by scripts/setup-conformance.sh (once per test
//! process; needs Go and the module proxy on the first run). The four runs
//! take turns: the suite's timing cases (cancel 5 ms after a send, a server
//! delaying 200 ms) want the machine's two cores to themselves more than
//! they want to overlap. `scripts/conformance-connect.sh` runs the same
//! configs and prints the table rows of docs/conformance.md.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cargo_bin, conformance_runner, repo_root};

/// How long one config may run before the runner is killed. A clean run
/// of the largest takes about 35 s on two cores.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// One config at a time (see the module docs).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn program(mode: &str) -> PathBuf {
    match mode {
        "server" => cargo_bin(
            "conformance-server",
            option_env!("CARGO_BIN_EXE_conformance-server"),
        ),
        _ => cargo_bin(
            "conformance-client",
            option_env!("CARGO_BIN_EXE_conformance-client"),
        ),
    }
}

/// The runner's summary: (`Total cases: N`, `P passed, F failed` → P).
fn summary(output: &str) -> Option<(u32, u32)> {
    let total = output
        .lines()
        .find_map(|l| l.strip_prefix("Total cases: "))?
        .trim()
        .parse()
        .ok()?;
    let passed = output
        .lines()
        .find_map(|l| {
            l.strip_suffix(" failed")
                .and_then(|l| l.split_once(" passed, "))
        })?
        .0
        .trim()
        .parse()
        .ok()?;
    Some((total, passed))
}

/// The `FAILED:` blocks of the runner's output, for the test's message.
fn failures(output: &str) -> String {
    let mut report = String::new();
    let mut inside = false;
    for line in output.lines() {
        if line.starts_with("FAILED:") {
            inside = true;
        } else if !line.starts_with(['\t', ' ']) && !line.is_empty() {
            inside = false;
        }
        if inside {
            report.push_str(line);
            report.push('\n');
        }
    }
    report
}

/// Runs the runner on `tests/conformance/connect/<config>.yaml` and checks
/// that all `expected_cases` passed.
fn run(config: &str, expected_cases: u32) {
    let runner = conformance_runner();
    let mode = if config.starts_with("server") {
        "server"
    } else {
        "client"
    };
    let program = program(mode);
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new(&runner);
    command
        .current_dir(repo_root())
        .arg("--conf")
        .arg(format!("tests/conformance/connect/{config}.yaml"))
        .arg("--mode")
        .arg(mode);
    if mode == "server" {
        command.args(["--parallel", "8"]);
    }
    let mut child = command
        .arg("--")
        .arg(&program)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", runner.display()));
    // Both pipes are read on threads so that neither can fill and stall
    // the runner.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("runner wait") {
            break Some(status);
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let Some(status) = status else {
        panic!(
            "{config}: the runner did not finish within {RUN_TIMEOUT:?}; output so far:\n{}",
            failures(&output)
        );
    };
    let Some((total, passed)) = summary(&output) else {
        panic!("{config}: no summary from the runner ({status}); its output:\n{output}");
    };
    eprintln!(
        "{config}: {passed}/{total} passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success() && passed == total,
        "{config}: {passed} of {total} cases passed (runner {status}); failures:\n{}",
        failures(&output)
    );
    assert_eq!(
        total, expected_cases,
        "{config}: the runner selected {total} cases, expected {expected_cases}: \
         did the config or the suite change?"
    );
}

#[test]
fn connect_conformance_server_plaintext() {
    run("server", 711);
}

#[test]
fn connect_conformance_server_tls() {
    run("server-tls", 531);
}

#[test]
fn connect_conformance_client_h2c() {
    run("client", 403);
}

#[test]
fn connect_conformance_client_tls() {
    run("client-tls", 632);
}

#[test]
fn summaries_are_read_from_the_runner_output() {
    let output = "FAILED: a/b:\n\twhy\nTotal cases: 12\n11 passed, 1 failed\n";
    assert_eq!(summary(output), Some((12, 11)));
    assert_eq!(failures(output), "FAILED: a/b:\n\twhy\n");
}
