#!/usr/bin/env bash
# Installs the Connect conformance runner used by tests/conformance_connect.rs
# and scripts/conformance-connect.sh:
#
#   tests/conformance/bin/connectconformance   connectrpc.com/conformance/cmd/connectconformance
#
# The runner carries its reference peers (referenceclient, referenceserver,
# grpcclient, grpcserver) inside the one binary, so nothing else is needed.
# The version is pinned by CONFORMANCE_VERSION below; the module comes from
# the Go module proxy (GOPROXY) with its own go.mod / go.sum, checked against
# the checksum database as `go install` always does.
#
# Idempotent: when the binary is there and the stamp (Go toolchain, version,
# this script) matches, it returns at once. Options: --force rebuilds.
set -euo pipefail

CONFORMANCE_VERSION=v1.0.5

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/tests/conformance/bin"
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    *) echo "setup-conformance: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { echo "setup-conformance: $*" >&2; }

command -v go >/dev/null || { log "go is not installed (need Go >= 1.21)"; exit 1; }

# Parallel test processes wait for each other instead of building twice.
mkdir -p "$bin"
exec 9>"$bin/.lock"
flock 9

want=$({ go version; echo "$CONFORMANCE_VERSION"; sha256sum <"$root/scripts/setup-conformance.sh"; } | sha256sum | cut -d' ' -f1)
if [[ $force == 0 && -x "$bin/connectconformance" && -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$want" ]]; then
  log "up to date ($bin/connectconformance $CONFORMANCE_VERSION)"
  exit 0
fi

start=$SECONDS
rm -f "$bin/.stamp"
log "go install connectrpc.com/conformance/cmd/connectconformance@$CONFORMANCE_VERSION"
# Outside any module, so our own go.mod files play no part; the runner's
# version string is set by the module version itself.
(cd / && GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath \
  "connectrpc.com/conformance/cmd/connectconformance@$CONFORMANCE_VERSION")
echo "$want" >"$bin/.stamp"
log "done in $((SECONDS - start))s"
