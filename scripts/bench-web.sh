#!/usr/bin/env bash
# The gRPC-Web gateway's cost per unary call: Connect's Node client calling
# Who over native gRPC and over gRPC-Web through the gateway, against one
# chat-server (release build; PROFILE=debug uses the debug build instead).
#
#   scripts/bench-web.sh [calls] [concurrency]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-web.sh
profile=${PROFILE:-release}
flag=--release
dir=release
if [[ $profile == debug ]]; then flag=""; dir=debug; fi
cargo build $flag --bin chat-server --example write-descriptors
tmp=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
native=$(port); web=$(port)
"target/$dir/chat-server" --addr "127.0.0.1:$native" --web-addr "127.0.0.1:$web" >"$tmp/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$web") 2>/dev/null && break
  sleep 0.05
done
"target/$dir/examples/write-descriptors" "$tmp/descriptors.bin"
(cd web && node test/bench-unary.mjs "http://127.0.0.1:$web" "http://127.0.0.1:$native" "$tmp/descriptors.bin" "${1:-5000}" "${2:-16}")
