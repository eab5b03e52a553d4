#!/usr/bin/env bash
# The project's one test command (also what CI runs):
#
#   scripts/test.sh
#
# On a bare machine it first installs what the tests need: the Go interop
# peers, grpcurl and Python packages (scripts/setup-interop.sh), Chromium and
# the web tests' npm packages (scripts/setup-web.sh), and redis-server
# (scripts/setup-redis.sh). Then it checks formatting, lints, import cycles
# and docs, and
# runs every test: unit, property, hostile input, end-to-end chat, history on
# Redis, interop against grpc-go and grpcio, and the page in headless Chromium.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# rustup, Go and pyenv install into these; a non-login shell may lack them.
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$HOME/go/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

step "interop peers (Go modules, Python packages)"
scripts/setup-interop.sh

step "web test tools (Chromium, npm packages)"
scripts/setup-web.sh

step "redis-server (Debian package, for tests/history.rs)"
scripts/setup-redis.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "no import cycles between the files of src/ (scripts/import-cycles.py)"
python3 scripts/import-cycles.py --self-test
python3 scripts/import-cycles.py

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

step "cargo test"
# tests/chat_bench.rs runs examples/fanout_floor as a program; `--all-targets`
# builds examples only as test harnesses, so build the program itself first.
cargo build --examples
cargo test --all-targets 2>&1 | tee target/test-output.txt
# `cargo test --all-targets` skips doctests; run them too.
cargo test --doc

step "summary"
python3 - target/test-output.txt <<'PY'
import re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line)
    if m:
        passed += int(m.group(1)); failed += int(m.group(2))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
