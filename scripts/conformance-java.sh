#!/usr/bin/env bash
# Runs grpc-java's interop peers against ours, outside cargo, and prints one
# line per direction for docs/conformance.md:
#
#   RESULT<TAB>grpc-java (io.grpc:grpc-interop-testing)<TAB><version><TAB><direction><TAB><cases><TAB><passed>[<TAB><why the failures are expected>]
#
# Directions:
#   its client (Netty) → interop-server     TestServiceClient, --use_okhttp=false
#   its client (OkHttp) → interop-server    TestServiceClient, --use_okhttp=true
#   interop-client → its server (TestServiceServer)
#
# The client cases are those of grpc-java's TestCases enum that need no
# cloud credentials, caching proxy or ORCA (the list below; the reasons are
# in tests/interop_grpc_java.rs, which runs the same directions under
# `cargo test`). grpc-java's client takes one case per run: one JVM per
# case, all against one interop-server.
#
# Against grpc-java's server, client_compressed_unary and
# client_compressed_streaming are expected to fail at their probe: its
# TestServiceImpl never reads expect_compressed, so it accepts the
# uncompressed request the probe sends instead of refusing it with
# INVALID_ARGUMENT. They are counted as cases, not as passes, and do not
# fail this script; their _noprobe variants are run and must pass.
#
# Exits non-zero when any other case fails. Usage:
#   scripts/conformance-java.sh            # builds what it needs first
#   KEEP_LOGS=1 scripts/conformance-java.sh  # keep per-case logs
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { echo "conformance-java: $*" >&2; }

java_cases=(
  empty_unary large_unary
  client_compressed_unary client_compressed_unary_noprobe server_compressed_unary
  client_streaming client_compressed_streaming client_compressed_streaming_noprobe
  server_streaming server_compressed_streaming
  ping_pong empty_stream custom_metadata status_code_and_message special_status_message
  unimplemented_method unimplemented_service cancel_after_begin cancel_after_first_response
  timeout_on_sleeping_server very_large_request pick_first_unary rpc_soak channel_soak
)
# Our interop-client's cases (its `all`), and those expected to fail against
# grpc-java's server. timeout_on_sleeping_server is last: after it, h2 may
# close the connection with PROTOCOL_ERROR (grpc-java's server sends
# trailers on the stream it has just reset; tests/interop_grpc_java.rs,
# OURS_AGAINST_JAVA, explains), which would fail the next case.
ours_cases=(
  empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
  custom_metadata status_code_and_message special_status_message unimplemented_method
  unimplemented_service cancel_after_begin cancel_after_first_response
  client_compressed_unary client_compressed_unary_noprobe server_compressed_unary
  client_compressed_streaming client_compressed_streaming_noprobe server_compressed_streaming
  timeout_on_sleeping_server
)
expected_fail_against_java=(client_compressed_unary client_compressed_streaming)

version=$(sed -n 's:.*<grpc.version>\(.*\)</grpc.version>.*:\1:p' tests/interop/java/pom.xml)
peer="grpc-java (io.grpc:grpc-interop-testing)"
lib="$root/tests/interop/java/lib"

scripts/setup-java.sh
log "cargo build --bin interop-server --bin interop-client"
cargo build --quiet --bin interop-server --bin interop-client
target_dir=${CARGO_TARGET_DIR:-$root/target}
server_bin="$target_dir/debug/interop-server"
client_bin="$target_dir/debug/interop-client"

logs=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -z "${KEEP_LOGS:-}" ]]; then rm -rf "$logs"; else log "logs kept in $logs"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (up to 20 s) until 127.0.0.1:$1 accepts; fails if process $2 died.
wait_port() {
  local i
  for i in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { log "server (pid $2) exited before listening"; return 1; }
    sleep 0.1
  done
  log "nothing listening on 127.0.0.1:$1 after 20 s"
  return 1
}

# C1 only: a case runs for about a second, less than C2 would take to pay
# off. The JVM expands `lib/*` to every jar there.
java_cmd=(java -XX:TieredStopAtLevel=1 -cp "$lib/*")
pkg=io.grpc.testing.integration

unexpected=0
result() { # direction cases passed [note on the expected failures]
  printf 'RESULT\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$version" "$1" "$2" "$3" "${4:-}"
}

# 1, 2: grpc-java's client on each transport against one interop-server.
port=$(free_port)
"$server_bin" --port="$port" --host=127.0.0.1 --use_tls=false \
  --max_receive_message_size=16777216 >"$logs/interop-server.log" 2>&1 &
pids+=($!)
wait_port "$port" "$!"
for transport in Netty OkHttp; do
  okhttp=false
  [[ $transport == OkHttp ]] && okhttp=true
  passed=0
  for case in "${java_cases[@]}"; do
    if timeout 60 "${java_cmd[@]}" $pkg.TestServiceClient --server_host=127.0.0.1 --server_port="$port" \
      --use_tls=false --use_okhttp=$okhttp --test_case="$case" \
      --soak_iterations=5 --soak_per_iteration_max_acceptable_latency_ms=5000 \
      --soak_overall_timeout_seconds=40 >"$logs/$transport-$case.log" 2>&1; then
      passed=$((passed + 1))
    else
      unexpected=$((unexpected + 1))
      log "FAIL its client ($transport) $case: $(grep -m1 -E 'Exception|Error' "$logs/$transport-$case.log" || echo 'see log')"
    fi
  done
  result "its client ($transport) → interop-server" "${#java_cases[@]}" "$passed"
done

# 3: our interop-client against grpc-java's TestServiceServer, every case in
# one run over one channel.
port=$(free_port)
"${java_cmd[@]}" $pkg.TestServiceServer --port="$port" --use_tls=false >"$logs/java-server.log" 2>&1 &
pids+=($!)
wait_port "$port" "$!"
list=$(IFS=,; echo "${ours_cases[*]}")
"$client_bin" --server_host=127.0.0.1 --server_port="$port" --use_tls=false \
  --test_case="$list" >"$logs/interop-client.log" 2>&1 || true
passed=$(grep -c '^PASS ' "$logs/interop-client.log" || true)
while read -r verdict case rest; do
  [[ $verdict == FAIL ]] || continue
  case=${case%:}
  if [[ " ${expected_fail_against_java[*]} " == *" $case "* ]]; then
    log "expected: $case fails against TestServiceServer (${rest})"
  else
    unexpected=$((unexpected + 1))
    log "FAIL interop-client $case: $rest"
  fi
done <"$logs/interop-client.log"
if ((passed + $(grep -c '^FAIL ' "$logs/interop-client.log" || true) != ${#ours_cases[@]})); then
  unexpected=$((unexpected + 1))
  log "interop-client did not report every case:"
  cat "$logs/interop-client.log" >&2
fi
result "interop-client → its server (TestServiceServer)" "${#ours_cases[@]}" "$passed" \
  "the ${#expected_fail_against_java[@]} failures are expected: its server ignores expect_compressed, so the compression probes cannot pass; their _noprobe variants do"

if ((unexpected > 0)); then
  log "$unexpected unexpected failure(s)"
  exit 1
fi
