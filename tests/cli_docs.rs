//! `docs/cli.md` holds every binary's `--help` output; this test keeps it
//! true. When a flag changes, regenerate the file with
//!
//! ```sh
//! UPDATE_CLI_DOCS=1 cargo test --test cli_docs
//! ```

use std::path::Path;
use std::process::Command;

/// The binaries, in the order the document lists them.
const BINARIES: &[(&str, &str)] = &[
    ("chat-server", env!("CARGO_BIN_EXE_chat-server")),
    ("chat-client", env!("CARGO_BIN_EXE_chat-client")),
    ("chat-bench", env!("CARGO_BIN_EXE_chat-bench")),
    ("interop-server", env!("CARGO_BIN_EXE_interop-server")),
    ("interop-client", env!("CARGO_BIN_EXE_interop-client")),
];

fn document() -> String {
    let mut doc = String::from(
        "# Command-line reference\n\n\
         Each binary's `--help`, as it prints it. Generated: \
         `UPDATE_CLI_DOCS=1 cargo test --test cli_docs` rewrites this file, \
         and `cargo test` fails when it is out of date.\n",
    );
    for (name, path) in BINARIES {
        let output = Command::new(path)
            .arg("--help")
            .env("COLUMNS", "100")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(output.status.success(), "{name} --help failed");
        let help = String::from_utf8(output.stdout).expect("help is UTF-8");
        doc.push_str(&format!(
            "\n## {name}\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
    }
    doc
}

#[test]
fn cli_reference_matches_every_binarys_help() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let want = document();
    if std::env::var_os("UPDATE_CLI_DOCS").is_some() {
        std::fs::write(&path, &want).expect("write docs/cli.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli.md is out of date: run `UPDATE_CLI_DOCS=1 cargo test --test cli_docs`"
    );
}
