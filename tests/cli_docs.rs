//! `docs/cli.md` holds every binary's `--help` output, and README.md's
//! "Binaries" section lists every binary's flags; these tests keep both
//! true. When a flag changes, regenerate them with
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
    (
        "conformance-server",
        env!("CARGO_BIN_EXE_conformance-server"),
    ),
    (
        "conformance-client",
        env!("CARGO_BIN_EXE_conformance-client"),
    ),
];

/// One binary's `--help` output.
fn help(name: &str, path: &str) -> String {
    let output = Command::new(path)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(output.status.success(), "{name} --help failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The long flags an option listing of `--help` names (`--help` and
/// `--version` left out), in order.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            let at = line.find("--")?;
            let name: String = line[at..]
                .chars()
                .skip(2)
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            Some(format!("--{name}"))
        })
        .filter(|flag| flag != "--help" && flag != "--version")
        .collect()
}

const README_BEGIN: &str =
    "<!-- flags: generated from each binary's --help by tests/cli_docs.rs -->\n";
const README_END: &str = "<!-- end of flags -->\n";

/// The README's list of flags, one line per binary.
fn readme_flags() -> String {
    let mut block = String::from(README_BEGIN);
    for (name, path) in BINARIES {
        let flags: Vec<String> = flags(&help(name, path))
            .iter()
            .map(|f| format!("`{f}`"))
            .collect();
        if flags.is_empty() {
            block.push_str(&format!("- `{name}`: no flags\n"));
        } else {
            block.push_str(&format!("- `{name}`: {}\n", flags.join(", ")));
        }
    }
    block.push_str(README_END);
    block
}

fn document() -> String {
    let mut doc = String::from(
        "# Command-line reference\n\n\
         Each binary's `--help`, as it prints it. Generated: \
         `UPDATE_CLI_DOCS=1 cargo test --test cli_docs` rewrites this file, \
         and `cargo test` fails when it is out of date.\n",
    );
    for (name, path) in BINARIES {
        let help = help(name, path);
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

#[test]
fn readme_lists_every_flag_of_every_binary() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let (before, rest) = readme
        .split_once(README_BEGIN)
        .expect("README.md has the flags block (see README_BEGIN)");
    let (_, after) = rest
        .split_once(README_END)
        .expect("README.md's flags block ends (see README_END)");
    let want = format!("{before}{}{after}", readme_flags());
    if std::env::var_os("UPDATE_CLI_DOCS").is_some() {
        std::fs::write(&path, &want).expect("write README.md");
        return;
    }
    assert!(
        readme == want,
        "README.md's list of flags is out of date: run `UPDATE_CLI_DOCS=1 cargo test --test cli_docs`"
    );
}

#[test]
fn flags_are_read_from_option_lines() {
    let help = "Usage: x [OPTIONS]\n\nOptions:\n      --addr <ADDR>\n          Address, not --a-flag.\n  \
                -v, --verbose\n      --use_tls <USE_TLS>\n  -h, --help\n";
    assert_eq!(flags(help), ["--addr", "--verbose", "--use_tls"]);
}
