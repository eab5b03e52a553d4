#!/usr/bin/env bash
# Installs what the web tests (tests/web.rs, tests/web_browser.rs) need:
#
#   /usr/bin/chromium      Debian's Chromium, driven headless by playwright-core
#   web/node_modules/      from web/package-lock.json (npm ci): the independent
#                          gRPC-Web client (@connectrpc/connect-web,
#                          @bufbuild/protobuf) and playwright-core
#
# The page itself needs none of this: it is served as written from web/src/.
# Idempotent: installs only what is missing or stale, and returns at once
# otherwise. Node.js >= 18 (Debian's when none is installed).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ ! -x /usr/bin/chromium ]]; then
  echo "setup-web: installing Debian's chromium" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null; then
  echo "setup-web: installing Debian's nodejs and npm" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi

# npm writes node_modules/.package-lock.json on every install: when it is
# newer than the committed lock, the tree matches the lock.
web="$root/web"
if [[ ! -f "$web/node_modules/.package-lock.json" \
   || "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]]; then
  echo "setup-web: npm ci in web/" >&2
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
