#!/usr/bin/env bash
# Runs the Connect conformance suite (connectrpc.com/conformance, runner
# `connectconformance`) against our conformance-server and
# conformance-client, one run per config in tests/conformance/connect/:
#
#   server.yaml      server: gRPC + gRPC-Web, HTTP/1.1 + h2c, plaintext
#   server-tls.yaml  server: gRPC + gRPC-Web, HTTP/1.1 + HTTP/2, TLS
#   client.yaml      client: gRPC, h2c
#   client-tls.yaml  client: gRPC, h2c and HTTP/2 over TLS
#
# Usage: scripts/conformance-connect.sh [server|server-tls|client|client-tls ...]
# (default: all four). It installs the pinned runner first
# (scripts/setup-conformance.sh), builds the two binaries, and prints for
# each config one line
#
#   RESULT<TAB>Connect conformance (connectconformance)<TAB>v1.0.5<TAB><direction><TAB><cases><TAB><passed>
#
# with the counts taken from the runner's own summary, then the runner's
# failure report if there was any. Every known-failing list is empty: any
# failing case fails the run (exit status 1). The runner's full output of
# each run is kept in $CONFORMANCE_LOG_DIR (default target/conformance/).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$HOME/go/bin:$PATH"

SUITE="Connect conformance (connectconformance)"
VERSION=v1.0.5
# RPCs in flight at once in server mode (the runner's default is 8).
PARALLEL=${CONFORMANCE_PARALLEL:-8}

configs=("$@")
if [[ ${#configs[@]} == 0 ]]; then
  configs=(server server-tls client client-tls)
fi

direction() {
  case "$1" in
    server) echo "server: gRPC+gRPC-Web, h1+h2c, plaintext" ;;
    server-tls) echo "server: gRPC+gRPC-Web, h1+h2, TLS" ;;
    client) echo "client: gRPC, h2c" ;;
    client-tls) echo "client: gRPC, h2c+h2 over TLS" ;;
    *) return 1 ;;
  esac
}
for config in "${configs[@]}"; do
  direction "$config" >/dev/null || { echo "conformance-connect: unknown config $config" >&2; exit 2; }
done

scripts/setup-conformance.sh
runner="$root/tests/conformance/bin/connectconformance"
cargo build --quiet --bin conformance-server --bin conformance-client
target=${CARGO_TARGET_DIR:-$root/target}
logs=${CONFORMANCE_LOG_DIR:-$target/conformance}
mkdir -p "$logs"

status=0
for config in "${configs[@]}"; do
  mode=${config%%-*}
  log="$logs/$config.log"
  echo "conformance-connect: $config ($mode mode) ..." >&2
  # In client mode the client under test sets its own pace (ours runs
  # every call at once); --parallel is for server mode only.
  args=(--conf "tests/conformance/connect/$config.yaml" --mode "$mode")
  if [[ $mode == server ]]; then
    args+=(--parallel "$PARALLEL")
  fi
  set +e
  "$runner" "${args[@]}" -- "$target/debug/conformance-$mode" >"$log" 2>&1
  rc=$?
  set -e
  # The runner's summary: "Total cases: N" then "P passed, F failed".
  cases=$(grep -a -m1 -oE '^Total cases: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  passed=$(grep -a -m1 -oE '^[0-9]+ passed, [0-9]+ failed' "$log" | grep -oE '^[0-9]+' || true)
  printf 'RESULT\t%s\t%s\t%s\t%s\t%s\n' "$SUITE" "$VERSION" "$(direction "$config")" \
    "${cases:-0}" "${passed:-0}"
  if [[ $rc != 0 || -z "$cases" || "$cases" != "$passed" ]]; then
    status=1
    echo "conformance-connect: $config failed (runner exit $rc); its report:" >&2
    grep -a -A30 -E '^FAILED' "$log" >&2 || tail -n 40 "$log" >&2
  fi
done
exit $status
