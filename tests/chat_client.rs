//! End-to-end tests of the `chat-client` binary in line mode (stdin and
//! stdout are pipes): real `chat-client` processes against a `chat-server`
//! process (or, to send what a real server never would, a hostile server in
//! this process), checking the exact lines people and scripts see.
//!
//! The TUI is the same session and view code with a different front end; its
//! key handling and drawing are unit-tested in `src/chat_client/`.
//!
//! Every wait polls with a deadline; nothing sleeps for a fixed time.

mod common;

use common::WAIT;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::hostile::{Hostile, message, notice};
use common::tls::TestPki;
use common::{Server, chat_server_on, free_port};

/// A `chat-server` process without a rate limit on `port`, killed when
/// dropped.
fn chat_server(port: u16) -> Server {
    chat_server_on(port, &["--rate-limit", "0"])
}

/// Collects a pipe's lines on a thread.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    collect_until_eof(pipe).0
}

/// Collects a pipe's lines on a thread; the flag is set at end of file.
fn collect_until_eof(
    pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, Arc<AtomicBool>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let eof = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&eof);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
        done.store(true, Ordering::Release);
    });
    (lines, eof)
}

/// A `chat-client` process in line mode.
struct Client {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Set once stderr is closed (the process is gone) and read to its end.
    stderr_eof: Arc<AtomicBool>,
    /// Lines of stdout already matched by `expect`.
    seen: usize,
}

impl Client {
    fn start(name: &str, args: &[&str]) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-client"))
            .args(args)
            .env_remove("CHAT_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chat-client");
        let stdout = collect(child.stdout.take().unwrap());
        let (stderr, stderr_eof) = collect_until_eof(child.stderr.take().unwrap());
        Client {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stderr_eof,
            seen: 0,
        }
    }

    /// A client named with `--user`, in `room`.
    fn join(port: u16, user: &str, room: &str) -> Client {
        let address = format!("127.0.0.1:{port}");
        Client::start(
            user,
            &["--address", &address, "--user", user, "--room", room],
        )
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (EOF, as Ctrl-D on a terminal).
    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    fn dump(&self) -> String {
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.name,
            self.stdout.lock().unwrap().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n"),
        )
    }

    /// Waits for a stdout line matching `pred` after the last one matched;
    /// returns it.
    fn expect_by(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let lines = self.stdout.lock().unwrap();
                if let Some(i) = lines[self.seen..].iter().position(|l| pred(l)) {
                    self.seen += i + 1;
                    return lines[self.seen - 1].clone();
                }
            }
            if Instant::now() > deadline {
                panic!("{} never printed {what}\n{}", self.name, self.dump());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exactly this stdout line.
    fn expect(&mut self, line: &str) {
        self.expect_by(&format!("{line:?}"), |l| l == line);
    }

    /// Everything the process wrote to stderr, once it has exited (waits
    /// for both, within [`WAIT`]).
    fn stderr_after_exit(&mut self) -> Vec<String> {
        self.exit_status();
        let deadline = Instant::now() + WAIT;
        while !self.stderr_eof.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "{}'s stderr never closed",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        }
        self.stderr.lock().unwrap().clone()
    }

    fn all_stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the process to exit.
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit\n{}", self.name, self.dump());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_clients_chat_in_a_room() {
    let port = free_port();
    let _server = chat_server(port);
    let address = format!("127.0.0.1:{port}");

    let mut alice = Client::join(port, "alice", "tea");
    alice.expect("-- welcome to tea, alice: you are the only one here --");

    // Bob gives his name as the first line, as the original clients did.
    let mut bob = Client::start("bob", &["--address", &address, "--room", "tea"]);
    bob.say("bob");
    bob.expect("-- welcome to tea, bob: also here: alice --");
    alice.expect("* bob joined");

    alice.say("hello");
    alice.expect("[you] hello");
    bob.expect("[alice] hello");

    bob.say("hi alice");
    bob.expect("[you] hi alice");
    alice.expect("[bob] hi alice");

    alice.say("/me pours the tea");
    bob.expect("* alice pours the tea");
    alice.say("//etc is a path");
    bob.expect("[alice] /etc is a path");

    bob.say("/who");
    bob.expect("-- in tea: alice, bob (2) --");

    // A name in use is refused with a clear message and a failure status.
    let mut impostor = Client::join(port, "alice", "tea");
    assert!(!impostor.exit_status().success());
    let err = impostor.stderr_after_exit().join("\n");
    assert!(err.contains("in use"), "{err}");

    alice.say("/quit");
    assert!(alice.exit_status().success(), "{}", alice.dump());
    bob.expect("* alice left");

    // EOF (Ctrl-D) leaves cleanly too.
    bob.close_stdin();
    assert!(bob.exit_status().success(), "{}", bob.dump());

    // Nothing but chat lines on stdout: no debug output, no typing noise.
    for line in alice.all_stdout().iter().chain(bob.all_stdout().iter()) {
        assert!(
            line.starts_with("[") || line.starts_with("* ") || line.starts_with("-- "),
            "unexpected line {line:?}"
        );
    }
}

#[test]
fn rooms_are_separate_and_scripts_deliver_before_leaving() {
    let port = free_port();
    let _server = chat_server(port);
    let mut watcher = Client::join(port, "watcher", "lobby");
    watcher.expect("-- welcome to lobby, watcher: you are the only one here --");
    let mut elsewhere = Client::join(port, "other", "garden");
    elsewhere.expect("-- welcome to garden, other: you are the only one here --");

    // A script: all input, then EOF, at once.
    let mut script = Client::start(
        "script",
        &["--address", &format!("127.0.0.1:{port}"), "--user", "bot"],
    );
    script.say("first");
    script.say("second");
    script.close_stdin();
    watcher.expect("* bot joined");
    watcher.expect("[bot] first");
    watcher.expect("[bot] second");
    watcher.expect("* bot left");
    assert!(script.exit_status().success(), "{}", script.dump());

    elsewhere.say("/quit");
    assert!(elsewhere.exit_status().success());
    assert!(
        !elsewhere.all_stdout().iter().any(|l| l.contains("bot")),
        "another room heard it: {:?}",
        elsewhere.all_stdout()
    );
}

/// A script's `/join`, written before the server is even reached, waits
/// its turn: the lines before it go to the first room, the lines after it
/// to the next, and the switch is printed between the two rooms' traffic.
#[test]
fn a_script_can_join_another_room() {
    let port = free_port();
    let _server = chat_server(port);
    let mut tea = Client::join(port, "tea", "tea");
    tea.expect("-- welcome to tea, tea: you are the only one here --");
    let mut kitchen = Client::join(port, "cook", "kitchen");
    kitchen.expect("-- welcome to kitchen, cook: you are the only one here --");

    let mut bot = Client::join(port, "bot", "tea");
    bot.say("for tea");
    bot.say("/join #kitchen");
    bot.say("for the kitchen");
    bot.close_stdin();
    assert!(bot.exit_status().success(), "{}", bot.dump());
    tea.expect("[bot] for tea");
    tea.expect("* bot left");
    kitchen.expect("* bot joined");
    kitchen.expect("[bot] for the kitchen");
    for line in [
        "[you] for tea",
        "──── #kitchen ────",
        "-- welcome to kitchen, bot: also here: cook --",
        "[you] for the kitchen",
    ] {
        bot.expect(line);
    }
    assert!(
        !tea.all_stdout()
            .iter()
            .any(|l| l.contains("for the kitchen")),
        "{}",
        tea.dump()
    );
}

/// The README's scripting example, `printf 'hello from a script\n' |
/// chat-client --user bot --room kitchen`, run 20 times against one fresh
/// server: every run prints its own message, as `[you]`, before it exits at
/// the end of its input. The earlier runs' messages come back as history,
/// under the name (someone of that name sent them, not this run), before
/// the end-of-history line.
#[test]
fn a_script_prints_its_own_message_every_run() {
    const RUNS: usize = 20;
    const TEXT: &str = "hello from a script";
    let port = free_port();
    let _server = chat_server(port);
    let address = format!("127.0.0.1:{port}");
    for run in 0..RUNS {
        let mut bot = Client::start(
            "bot",
            &["--address", &address, "--user", "bot", "--room", "kitchen"],
        );
        bot.say(TEXT);
        bot.close_stdin();
        assert!(bot.exit_status().success(), "run {run}: {}", bot.dump());
        // The process is gone: everything it printed is in the pipe.
        bot.expect(&format!("[you] {TEXT}"));
        let lines = bot.all_stdout();
        let own = lines.iter().filter(|l| l.starts_with("[you]")).count();
        assert_eq!(own, 1, "run {run}: {lines:?}");
        // Nothing replayed, no end-of-history line.
        let replay_end = lines
            .iter()
            .position(|l| l.starts_with("-- end of history"))
            .unwrap_or(0);
        let history: Vec<&String> = lines[..replay_end]
            .iter()
            .filter(|l| l.starts_with('['))
            .collect();
        assert_eq!(
            history,
            vec![&format!("[bot] {TEXT}"); run],
            "run {run}: the earlier runs as history: {lines:?}"
        );
        if run > 0 {
            let end = match run {
                1 => "-- end of history (1 message) --".to_owned(),
                run => format!("-- end of history ({run} messages) --"),
            };
            let at = |want: &str| lines.iter().position(|l| l == want);
            assert!(
                at(&end) < at(&format!("[you] {TEXT}")),
                "run {run}: history first: {lines:?}"
            );
        }
    }
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let port = free_port();
    let started = Instant::now();
    let mut client = Client::start(
        "lonely",
        &[
            "--address",
            &format!("127.0.0.1:{port}"),
            "--user",
            "lonely",
            "--connect-retries",
            "1",
        ],
    );
    client.say("is anyone there?");
    client.close_stdin();
    let status = client.exit_status();
    assert!(!status.success(), "{}", client.dump());
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = client.stderr_after_exit();
    assert_eq!(stderr.len(), 1, "one line: {stderr:?}");
    assert!(
        stderr[0].starts_with("chat-client: cannot connect to 127.0.0.1:"),
        "{stderr:?}"
    );
    assert!(!stderr[0].contains("panicked"));
    assert!(
        client
            .all_stdout()
            .iter()
            .any(|l| l.ends_with("retrying in 0.5s --")),
        "says it retries: {}",
        client.dump()
    );
}

/// `--address HOST` means the default port, 50053 (before, it was retried
/// as if the server were down, and failed as "invalid socket address"); an
/// address that cannot work fails at once, naming the flag.
#[test]
fn an_address_without_a_port_means_the_default_port() {
    let mut bad = Client::start("bad", &["--address", "127.0.0.1:http", "--user", "x"]);
    assert_eq!(bad.exit_status().code(), Some(2), "{}", bad.dump());
    assert_eq!(
        bad.stderr_after_exit(),
        [
            r#"chat-client: --address 127.0.0.1:http: the port "http" is not a number from 1 to 65535 (without a port, 50053 is used)"#
        ],
    );
    assert!(bad.all_stdout().is_empty(), "{}", bad.dump());

    // Only where the default port is free can this test own it.
    if std::net::TcpListener::bind("127.0.0.1:50053").is_err() {
        eprintln!("port 50053 is in use here: the connecting half is skipped");
        return;
    }
    let _server = chat_server(50053);
    let mut alice = Client::start("alice", &["--address", "127.0.0.1", "--user", "alice"]);
    alice.expect_by("the welcome", |l| {
        l.starts_with("-- welcome to lobby, alice")
    });
    alice.say("/quit");
    assert!(alice.exit_status().success(), "{}", alice.dump());
}

/// A client set up differently from its server fails at once (no retries:
/// nothing would change) with one line naming the likely cause and the
/// flag that fixes it.
#[test]
fn mismatched_clients_are_told_what_to_change() {
    // `may_retry`: the failure that reveals the cause can come second,
    // after a plain "broken pipe" on the first attempt.
    let expect_error = |args: &[&str], line: &str, may_retry: bool| {
        // A plaintext client on a TLS port learns the cause only if it reads
        // the server's TLS alert before its own next write fails: when every
        // startup attempt loses that race, it gives up with "broken pipe"
        // (a known limit, in docs/chat-client.md). Only that outcome, and
        // only there, is run again, at most twice.
        const RACE: &str = "chat-client: connection lost: stream closed because of a broken pipe";
        let runs = if may_retry { 3 } else { 1 };
        for run in 1..=runs {
            let mut client = Client::start("client", args);
            if !may_retry {
                client.close_stdin();
            }
            assert_eq!(client.exit_status().code(), Some(1), "{}", client.dump());
            let stderr = client.stderr_after_exit();
            if may_retry && run < runs && stderr == [RACE] {
                continue;
            }
            assert_eq!(stderr, [line], "{}", client.dump());
            assert!(
                may_retry || !client.all_stdout().iter().any(|l| l.contains("retrying")),
                "retried: {}",
                client.dump()
            );
            break;
        }
    };

    // Plaintext to a TLS port (before: "frame with invalid size", after
    // three retries).
    let pki = TestPki::generate();
    let tls_port = free_port();
    let _tls_server = chat_server_on(
        tls_port,
        &[
            "--tls-cert",
            &TestPki::arg(&pki.cert),
            "--tls-key",
            &TestPki::arg(&pki.key),
        ],
    );
    let tls_address = format!("127.0.0.1:{tls_port}");
    expect_error(
        &["--address", &tls_address, "--user", "alice"],
        "chat-client: the server does not answer in plaintext HTTP/2; it probably expects TLS: \
         add --tls (and --ca FILE for a private CA) (this client's HTTP/2 layer (h2) detected \
         a protocol violation by the server and sent GOAWAY FRAME_SIZE_ERROR (h2: connection \
         error detected: frame with invalid size))",
        true,
    );

    // No token for a server that requires one (before: "send
    // `authorization: Bearer <token>` metadata").
    let tokens = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chat-client-tokens-{}", std::process::id()));
    std::fs::write(&tokens, "sekrit alice\n").unwrap();
    let port = free_port();
    let _server = chat_server_on(port, &["--auth-tokens", &TestPki::arg(&tokens)]);
    let address = format!("127.0.0.1:{port}");
    expect_error(
        &["--address", &address, "--user", "alice"],
        "chat-client: the server requires a token: give it with --token TOKEN or in the \
         CHAT_TOKEN environment variable",
        false,
    );
    let _ = std::fs::remove_file(&tokens);
}

#[test]
fn reconnects_after_the_server_restarts() {
    let port = free_port();
    let server = chat_server(port);
    let mut alice = Client::join(port, "alice", "lobby");
    alice.expect("-- welcome to lobby, alice: you are the only one here --");
    let mut bob = Client::join(port, "bob", "lobby");
    alice.expect("* bob joined");
    bob.expect_by("bob's welcome", |l| {
        l.starts_with("-- welcome to lobby, bob")
    });

    drop(server); // killed abruptly: no goodbye to the clients
    alice.expect("-- connection lost, reconnecting in 0.5s --");
    bob.expect("-- connection lost, reconnecting in 0.5s --");

    let _server = chat_server(port);
    alice.expect("-- reconnected --");
    bob.expect("-- reconnected --");
    // Same name, same room: the server welcomes each again.
    alice.expect_by("alice's new welcome", |l| {
        l.starts_with("-- welcome to lobby, alice")
    });
    bob.expect_by("bob's new welcome", |l| {
        l.starts_with("-- welcome to lobby, bob")
    });

    // Both are in again before anyone speaks: Who lists them.
    let deadline = Instant::now() + WAIT;
    loop {
        alice.say("/who");
        let who = alice.expect_by("a /who answer", |l| l.starts_with("-- in lobby:"));
        if who == "-- in lobby: alice, bob (2) --" {
            break;
        }
        assert!(Instant::now() < deadline, "bob never came back: {who}");
    }
    alice.say("back again");
    bob.expect("[alice] back again");
    bob.say("welcome back");
    alice.expect("[bob] welcome back");

    alice.say("/quit");
    bob.say("/quit");
    assert!(alice.exit_status().success());
    assert!(bob.exit_status().success());
}

/// A server that sends what the real one refuses to relay: names, messages
/// and notices full of terminal escape sequences.
#[test]
fn escape_sequences_from_peers_are_neutralised() {
    let server = Hostile {
        on_join: vec![
            message("eve\x1b[2J", "\x1b]0;pwned\x07hi\r[bob] fake"),
            notice("\u{9b}31mred\u{202e}"),
        ],
        on_message: vec![],
    }
    .start();

    let mut client = Client::join(server.port, "alice", "lobby");
    client.expect(r"[eve\x1b[2J] \x1b]0;pwned\x07hi\x0d[bob] fake");
    client.expect(r"-- \x9b31mred\u{202e} --");
    client.say("/quit");
    assert!(client.exit_status().success(), "{}", client.dump());
    for line in client.all_stdout() {
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "raw control character reached stdout: {line:?}"
        );
    }
}
