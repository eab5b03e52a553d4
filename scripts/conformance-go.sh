#!/usr/bin/env bash
# grpc-go's interop peers against ours, outside cargo, for docs/conformance.md:
#
#   scripts/conformance-go.sh
#
# The same runs as tests/interop_grpc_go.rs (which is what the test command
# uses): grpc-go's interop client against our interop-server, one process per
# case; our interop-client against grpc-go's interop server; the four
# compression cases both ways (grpc-go's own client has none, so
# tests/interop/compression-client plays them, and grpc-go's server does not
# check them, so tests/interop/compression-server does). Prints one line per
# direction,
#
#   RESULT <tab> peer <tab> version <tab> direction <tab> cases <tab> passed
#
# and exits non-zero if any case failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$HOME/go/bin:$PATH"

scripts/setup-interop.sh --no-python >&2
cargo build --quiet --bin interop-server --bin interop-client >&2

bin=tests/interop/bin
version=$(awk '$1 == "google.golang.org/grpc" { print $2; exit }' tests/interop/go.mod)
peer="grpc-go (google.golang.org/grpc)"
standard=(empty_unary large_unary client_streaming server_streaming ping_pong
  empty_stream custom_metadata status_code_and_message special_status_message
  unimplemented_method unimplemented_service cancel_after_begin
  cancel_after_first_response timeout_on_sleeping_server)
compression=(client_compressed_unary server_compressed_unary
  client_compressed_streaming server_compressed_streaming)

failed=0
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a server binary on a free port and waits until it accepts; sets $port.
start() {
  port=$(free_port)
  "$@" --port="$port" --use_tls=false >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "conformance-go: $1 did not start" >&2
  exit 1
}

# Runs CLIENT once per case against $port; prints a RESULT line.
per_case() {
  local direction=$1 client=$2; shift 2
  local passed=0 total=0
  for case in "$@"; do
    total=$((total + 1))
    if timeout 60 "$client" --server_host=127.0.0.1 --server_port="$port" \
      --test_case="$case" --use_tls=false >/dev/null 2>&1; then
      passed=$((passed + 1))
    else
      echo "conformance-go: FAIL $direction: $case" >&2
      failed=1
    fi
  done
  printf 'RESULT\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$version" "$direction" "$total" "$passed"
}

start target/debug/interop-server
per_case "its interop client → interop-server" "$bin/go-interop-client" "${standard[@]}"
per_case "its compression cases (tests/interop/compression-client) → interop-server" \
  "$bin/go-compression-client" "${compression[@]}"

start "$bin/go-interop-server"
per_case "interop-client → its interop server" target/debug/interop-client "${standard[@]}"

start "$bin/go-compression-server"
per_case "interop-client → its interop server with compression checks (tests/interop/compression-server)" \
  target/debug/interop-client "${compression[@]}"

exit "$failed"
