//! The chat page in a real browser: headless Chromium (Debian's `chromium`,
//! driven by `playwright-core`) against a `chat-server --web-addr` process,
//! with a `chat-client` in line mode in the same room. The scenario is
//! `web/test/browser.mjs`: joins, leaves, typing and messages between two
//! pages and the terminal client, the member and room lists, `/me` actions
//! both ways, the terminal's commands, the input held to the server's
//! message limit, markup shown as text, a reload resuming without
//! duplicates, and a page that left and came back shown what it missed,
//! once; a page switching rooms and coming back (resumed, nothing twice),
//! and a refused switch going back; both pages reconnecting by themselves
//! after the server is killed and started again; no history epoch on screen;
//! the page at 360 px wide.
//!
//! Screenshots are kept in `target/web-artifacts/` (`narrow-360.png`: the
//! page on a phone-sized screen).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{chat_server, chat_server_on, free_port, repo_root};

/// Waits until the web listener accepts (it is bound just after the native
/// one, which `chat_server` waits for).
fn wait_listening(port: u16) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "web listener never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--max-message-chars` for the server: not the default, which the page
/// also has as its fallback.
const MAX_MESSAGE_CHARS: &str = "1500";

#[test]
fn two_pages_and_a_terminal_client_chat() {
    let setup = Command::new("bash")
        .arg(repo_root().join("scripts/setup-web.sh"))
        .status()
        .expect("run scripts/setup-web.sh");
    assert!(setup.success(), "scripts/setup-web.sh failed");

    let web_port = free_port();
    let web_addr = format!("127.0.0.1:{web_port}");
    // A limit of its own, so the page is seen taking it from the server.
    let args = [
        "--rate-limit",
        "0",
        "--max-message-chars",
        MAX_MESSAGE_CHARS,
        "--web-addr",
        &web_addr,
    ];
    let mut server = chat_server(&args);
    wait_listening(web_port);

    let artefacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../web-artifacts");
    let mut node = Command::new("node")
        .arg(repo_root().join("web/test/browser.mjs"))
        .arg(format!("http://{web_addr}/"))
        .arg(env!("CARGO_BIN_EXE_chat-client"))
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("browsers")
        .arg(&artefacts)
        .arg(MAX_MESSAGE_CHARS)
        .current_dir(repo_root().join("web"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed");
    let mut to_node = node.stdin.take().unwrap();
    let stderr = node.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    // The script's progress; it asks for a server restart once.
    let mut stdout = String::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        stdout.push_str(&line);
        stdout.push('\n');
        if line == "restart-server" {
            let port = server.port;
            // Killed, as in a crash; the same ports again.
            drop(server);
            server = chat_server_on(port, &args);
            wait_listening(web_port);
            writeln!(to_node, "restarted").unwrap();
        }
    }
    let status = node.wait().unwrap();
    let stderr = stderr.join().unwrap();
    server.assert_running();
    assert!(
        status.success(),
        "browser test failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver:\n{}",
        server.output()
    );
    for step in [
        "ok joins seen by everyone",
        "ok member list",
        "ok input limit from the server",
        "ok typing seen",
        "ok messages between pages and chat-client",
        "ok /me both ways",
        "ok commands",
        "ok markup shown as text",
        "ok reload resumes without duplicates",
        "ok missed messages resumed once",
        "ok room switch",
        "ok refused room switch goes back",
        "ok pages reconnect after a server restart",
        "ok no internal ids on screen",
        "ok usable at 360 px",
        "ok leaves seen",
        "ok done",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}\n{stderr}");
    }
    assert!(artefacts.join("bob.png").is_file());
    assert!(artefacts.join("narrow-360.png").is_file());
}
