#!/usr/bin/env bash
# Installs redis-server (Debian's package) for the history tests
# (tests/history.rs start their own instances on free loopback ports).
# Idempotent: returns at once when redis-server is on PATH.
set -euo pipefail

log() { echo "setup-redis: $*" >&2; }

if command -v redis-server >/dev/null; then
  log "$(redis-server --version | cut -d' ' -f1-3) already installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
  log "redis-server is missing and this user cannot install it (need root or sudo)"
  exit 1
fi
sudo_=""
[[ $(id -u) -ne 0 ]] && sudo_=sudo
log "installing redis-server from Debian"
# Concurrent runs (parallel test processes) wait for each other.
exec 9>/tmp/grpc-chat-setup-redis.lock
flock 9
if ! command -v redis-server >/dev/null; then
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
# The package's own service is not wanted: tests run their own servers.
if command -v service >/dev/null; then
  $sudo_ service redis-server stop >/dev/null 2>&1 || true
fi
log "$(redis-server --version | cut -d' ' -f1-3)"
