#!/usr/bin/env bash
# Unary load comparison: our interop-server (release build) vs grpc-go's
# interop server, both driven by ghz with the same settings in the same run,
# on loopback only. Prints requests/s and p99 latency for each, and the ratio.
#
#   scripts/bench-unary.sh                # both servers
#   scripts/bench-unary.sh --go-only      # only grpc-go's server
#
# Environment (defaults in brackets):
#   REQUESTS [100000] requests in each measured run (ghz -n)
#   WARMUP [10000]   requests in an unmeasured run before each measured one
#   MAX_SECONDS [120] a ghz run taking longer than this is killed (fails)
#   CONCURRENCY [50] ghz -c (concurrent workers)
#   CONNECTIONS [4]  ghz --connections
#   RESPONSE_SIZE [64] / REQUEST_SIZE [64]  payload bytes (zeros)
#   OURS_BIN         use this interop-server binary instead of building one
#   PIN [1]          on a machine with >= 2 CPUs, run the server on CPU 0 and
#                    ghz on the others (taskset), so they don't fight for cores
#   SERVER_CPU_PERCENT  if set (e.g. 10), each server runs in a cgroup capped at
#                    that share of one CPU, so the *server* is the bottleneck
#                    and requests/s compares the servers rather than ghz
#                    (needs root and the cgroup cpu controller)
#
# The requests are grpc.testing.TestService/UnaryCall SimpleRequests; ghz gets
# the message types from tests/interop/bin/grpc_testing.protoset, which
# scripts/setup-interop.sh generates from grpc-go's published grpc_testing
# package (the repo keeps no .proto copy of grpc.testing).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/tests/interop/bin"
REQUESTS=${REQUESTS:-100000}
WARMUP=${WARMUP:-10000}
MAX_SECONDS=${MAX_SECONDS:-120}
CONCURRENCY=${CONCURRENCY:-50}
CONNECTIONS=${CONNECTIONS:-4}
RESPONSE_SIZE=${RESPONSE_SIZE:-64}
REQUEST_SIZE=${REQUEST_SIZE:-64}
PIN=${PIN:-1}
go_only=0
for arg in "$@"; do
  case "$arg" in
    --go-only) go_only=1 ;;
    *) echo "bench-unary: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { echo "bench-unary: $*" >&2; }

"$root/scripts/setup-interop.sh" --no-python

ours_bin=${OURS_BIN:-}
if [[ $go_only == 0 && -z $ours_bin ]]; then
  log "cargo build --release --bin interop-server"
  if (cd "$root" && cargo build --release --bin interop-server); then
    ours_bin=$(cd "$root" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/interop-server
  else
    log "WARNING: building interop-server failed; measuring grpc-go's server only"
  fi
fi

server_cpu=() ghz_cpu=()
ncpu=$(nproc)
if [[ $PIN == 1 && $ncpu -ge 2 ]] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c 0)
  ghz_cpu=(taskset -c "1-$((ncpu - 1))")
  log "pinning: servers on CPU 0, ghz on CPU 1-$((ncpu - 1))"
fi

# Optional CPU cap for the servers: cgroup v1 (cpu controller) or v2 (cpu.max).
cgroup=""
if [[ -n ${SERVER_CPU_PERCENT:-} ]]; then
  period=10000
  quota=$((period * SERVER_CPU_PERCENT / 100))
  if [[ -d /sys/fs/cgroup/cpu && -w /sys/fs/cgroup/cpu ]]; then
    cgroup=/sys/fs/cgroup/cpu/grpc-chat-bench-$$
    mkdir "$cgroup"
    echo "$period" >"$cgroup/cpu.cfs_period_us"
    echo "$quota" >"$cgroup/cpu.cfs_quota_us"
  elif [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
    cgroup=/sys/fs/cgroup/grpc-chat-bench-$$
    mkdir "$cgroup"
    echo "$quota $period" >"$cgroup/cpu.max"
  else
    log "SERVER_CPU_PERCENT needs the cgroup cpu controller (and root)"; exit 1
  fi
  log "servers capped at $SERVER_CPU_PERCENT% of one CPU ($cgroup)"
fi

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n ${tmp:-} ]] && rm -rf "$tmp"
  [[ -n $cgroup ]] && rmdir "$cgroup" 2>/dev/null || true
}
trap cleanup EXIT
tmp=$(mktemp -d)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # name binary -> sets $port
  local name=$1 exe=$2
  port=$(free_port)
  "${server_cpu[@]}" "$exe" --port "$port" --use_tls=false >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  if [[ -n $cgroup ]]; then
    echo "${pids[-1]}" >"$cgroup/cgroup.procs"
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  log "$name did not start on port $port:"; cat "$tmp/$name.log" >&2; exit 1
}

zeros_b64=$(python3 -c "import base64; print(base64.b64encode(bytes($REQUEST_SIZE)).decode())")
data="{\"response_size\": $RESPONSE_SIZE, \"payload\": {\"body\": \"$zeros_b64\"}}"

# -n rather than -z: with -z, ghz cuts the calls in flight at the end and
# counts them as errors.
run_ghz() { # port requests out.json
  timeout "$MAX_SECONDS" "${ghz_cpu[@]}" "$bin/ghz" --insecure \
    --protoset "$bin/grpc_testing.protoset" \
    --call grpc.testing.TestService/UnaryCall \
    -d "$data" -c "$CONCURRENCY" --connections "$CONNECTIONS" \
    -n "$2" -O json -o "$3" "127.0.0.1:$1"
}

# user+system CPU time of a process (and its reaped threads) in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

names=() results=()
bench() { # name binary
  local name=$1
  start_server "$name" "$2"
  local pid=${pids[-1]} before after
  log "$name on 127.0.0.1:$port: warmup $WARMUP requests, then $REQUESTS (-c $CONCURRENCY, --connections $CONNECTIONS)"
  run_ghz "$port" "$WARMUP" /dev/null
  before=$(cpu_ticks "$pid")
  run_ghz "$port" "$REQUESTS" "$tmp/$name.json"
  after=$(cpu_ticks "$pid")
  echo "$(( (after - before) * 1000000 / $(getconf CLK_TCK) ))" >"$tmp/$name.cpu_us"
  names+=("$name") results+=("$tmp/$name.json")
  kill "${pids[-1]}" 2>/dev/null || true
}

bench grpc-go "$bin/go-interop-server"
if [[ $go_only == 0 && -n $ours_bin ]]; then
  bench grpc-chat "$ours_bin"
fi

python3 - "${names[@]}" -- "${results[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
i = args.index("--")
names, files = args[:i], args[i + 1:]
rows = {}
for name, f in zip(names, files):
    r = json.load(open(f))
    p99 = next((d["latency"] for d in r.get("latencyDistribution") or [] if d["percentage"] == 99), None)
    ok = (r.get("statusCodeDistribution") or {}).get("OK", 0)
    errs = sum((r.get("statusCodeDistribution") or {}).values()) - ok
    cpu_us = int(open(f.replace(".json", ".cpu_us")).read())
    rows[name] = (r["rps"], p99 / 1e6 if p99 else float("nan"), r["count"], errs, cpu_us / max(r["count"], 1))
print()
print(f"{'server':<10} {'req/s':>10} {'p99 ms':>8} {'requests':>9} {'errors':>7} {'server CPU us/req':>18}")
for name, (rps, p99, n, errs, cpu) in rows.items():
    print(f"{name:<10} {rps:>10.0f} {p99:>8.2f} {n:>9} {errs:>7} {cpu:>18.1f}")
if "grpc-chat" in rows and "grpc-go" in rows:
    a, b = rows["grpc-chat"], rows["grpc-go"]
    print(f"\nratio grpc-chat/grpc-go: throughput {a[0] / b[0]:.2f}x, p99 {a[1] / b[1]:.2f}x, "
          f"server CPU per request {a[4] / b[4]:.2f}x")
print("(on a small machine ghz itself is usually the bottleneck; server CPU per request "
      "is the figure that compares the servers' efficiency)")
if any(r[3] for r in rows.values()):
    print("\nWARNING: some requests failed (see errors column)")
    sys.exit(1)
PY
