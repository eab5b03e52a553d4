#!/usr/bin/env bash
# Builds the interop peers used by the cargo integration tests and benches:
#
#   tests/interop/bin/go-interop-client      grpc-go's interop client  (google.golang.org/grpc/interop/client)
#   tests/interop/bin/go-interop-server      grpc-go's interop server  (google.golang.org/grpc/interop/server)
#   tests/interop/bin/go-compression-client  our Go client for the 4 compression cases
#   tests/interop/bin/go-compression-server  grpc-go's interop server + the compression features
#   tests/interop/bin/ghz                    github.com/bojand/ghz load generator
#   tests/interop/bin/grpc-health-probe      github.com/grpc-ecosystem/grpc-health-probe (grpc.health.v1 client)
#   tests/interop/bin/grpcurl                github.com/fullstorydev/grpcurl (a reflection-driven gRPC client)
#   tests/interop/bin/grpc_testing.protoset  descriptors of grpc/testing/test.proto (for ghz)
#   tests/interop/.venv                      Python venv with tests/interop/requirements.txt
#   tests/interop/bin/go-chat-client         tests/interop/chat/goclient: scriptable chat.ChatService peer
#   tests/interop/chat/chatpb/               Go code for proto/chat.proto (generated, not committed)
#   tests/interop/chat/pygen/                Python code for proto/chat.proto (generated, not committed)
#   tests/interop/bin/protoc-gen-go{,-grpc}  the Go protoc plugins used for chatpb
#
# Versions are pinned by tests/interop/go.mod / go.sum, GHZ_VERSION,
# GRPC_HEALTH_PROBE_VERSION and GRPCURL_VERSION below and
# requirements.txt; the chat client has its own module (tests/interop/chat/
# go.mod / go.sum, which also pins protoc-gen-go: it is built at the version of
# google.golang.org/protobuf there) and PROTOC_GEN_GO_GRPC_VERSION below. The
# protoc is the one bundled with grpcio-tools (`python -m grpc_tools.protoc`),
# so the chat peers need the venv (they are skipped with --no-python).
# Idempotent: when nothing that goes into the outputs changed since the last
# successful run (see bin/.stamp, bin/.chat-stamp) it returns at once.
# Options: --force rebuilds everything; --no-python skips the venv.
set -euo pipefail

GHZ_VERSION=v0.120.0
GRPC_HEALTH_PROBE_VERSION=v0.4.41
GRPCURL_VERSION=v1.9.3
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/tests/interop"
bin="$dir/bin"
venv="$dir/.venv"
chat="$dir/chat"
force=0
python=1
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --no-python) python=0 ;;
    *) echo "setup-interop: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { echo "setup-interop: $*" >&2; }

command -v go >/dev/null || { log "go is not installed (need Go >= 1.24)"; exit 1; }

# Concurrent runs (parallel test processes) wait for each other.
mkdir -p "$bin"
exec 9>"$bin/.lock"
flock 9

# Everything the Go outputs depend on: Go sources and module files, this
# script (which holds GHZ_VERSION and GRPC_HEALTH_PROBE_VERSION), the Go
# toolchain.
go_stamp_input() {
  (
    cd "$dir"
    go version
    find . \( -path ./bin -o -path ./.venv -o -path ./chat \) -prune -o -type f \
      \( -name '*.go' -o -name go.mod -o -name go.sum \) -print \
      | LC_ALL=C sort | xargs sha256sum
    sha256sum <"$root/scripts/setup-interop.sh"
  ) | sha256sum | cut -d' ' -f1
}
py_stamp_input() {
  { "${PYTHON:-python3}" --version 2>&1; sha256sum <"$dir/requirements.txt"; } | sha256sum | cut -d' ' -f1
}

outputs=(go-interop-client go-interop-server go-compression-client go-compression-server ghz
  grpc-health-probe grpcurl grpc_testing.protoset)
go_want=$(go_stamp_input)
go_done=0
if [[ $force == 0 && -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$go_want" ]]; then
  go_done=1
  for o in "${outputs[@]}"; do [[ -e "$bin/$o" ]] || go_done=0; done
fi
py_want=$(py_stamp_input)
py_done=1
if [[ $python == 1 ]]; then
  if [[ $force == 1 || ! -x "$venv/bin/python" || ! -f "$venv/.stamp" || "$(cat "$venv/.stamp")" != "$py_want" ]]; then
    py_done=0
  fi
fi
# The chat peers: inputs are our proto, the chat module, the Go toolchain, the
# Python requirements (protoc and grpcio come from there) and this script.
chat_stamp_input() {
  (
    cd "$chat"
    go version
    sha256sum "$root/proto/chat.proto" "$dir/requirements.txt" go.mod go.sum
    find ./goclient -type f -name '*.go' -print | LC_ALL=C sort | xargs sha256sum
    sha256sum <"$root/scripts/setup-interop.sh"
  ) | sha256sum | cut -d' ' -f1
}
chat_outputs=("$bin/go-chat-client" "$bin/protoc-gen-go" "$bin/protoc-gen-go-grpc"
  "$chat/chatpb/chat.pb.go" "$chat/chatpb/chat_grpc.pb.go"
  "$chat/pygen/chat_pb2.py" "$chat/pygen/chat_pb2_grpc.py")
chat_want=$(chat_stamp_input)
chat_done=1
if [[ $python == 1 ]]; then
  if [[ $force == 1 || ! -f "$bin/.chat-stamp" || "$(cat "$bin/.chat-stamp")" != "$chat_want" ]]; then
    chat_done=0
  fi
  for o in "${chat_outputs[@]}"; do [[ -e "$o" ]] || chat_done=0; done
fi

if [[ $go_done == 1 && $py_done == 1 && $chat_done == 1 ]]; then
  log "up to date ($bin)"
  exit 0
fi

start=$SECONDS
cd "$dir"

if [[ $go_done == 0 ]]; then
  rm -f "$bin/.stamp"
  log "go mod download (grpc-go $(go list -m -f '{{.Version}}' google.golang.org/grpc))"
  go mod download

  build() { # output package
    log "go build -o bin/$1 $2"
    go build -trimpath -o "$bin/$1" "$2"
  }
  build go-interop-client google.golang.org/grpc/interop/client
  build go-interop-server google.golang.org/grpc/interop/server
  build go-compression-client ./compression-client
  build go-compression-server ./compression-server

  log "generating bin/grpc_testing.protoset"
  go run ./protoset -o "$bin/grpc_testing.protoset"

  if [[ -x "$bin/ghz" ]] && "$bin/ghz" --version 2>&1 | grep -q "${GHZ_VERSION#v}"; then
    log "ghz $GHZ_VERSION already installed"
  else
    log "go install github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
    # ghz has its own go.mod; build it outside our module. Its version string
    # is set by ldflags in upstream releases; set it the same way here.
    (cd / && GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath \
      -ldflags "-X main.version=${GHZ_VERSION#v}" "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION")
  fi

  # `grpc-health-probe -version` prints "<tag>; ..." when the tag is set by
  # ldflags, as upstream releases do; set it the same way so the check below
  # can tell an up-to-date binary from an old one.
  if [[ -x "$bin/grpc-health-probe" ]] &&
    "$bin/grpc-health-probe" -version 2>&1 | grep -qF "$GRPC_HEALTH_PROBE_VERSION;"; then
    log "grpc-health-probe $GRPC_HEALTH_PROBE_VERSION already installed"
  else
    # Not `go install …@version`: that also fetches the module's list of
    # versions (to report deprecation), which some module proxies refuse for
    # this module. Downloading the pinned version and building it in place,
    # with its own go.mod / go.sum, needs only that version.
    probe="github.com/grpc-ecosystem/grpc-health-probe@$GRPC_HEALTH_PROBE_VERSION"
    log "go build -o bin/grpc-health-probe $probe"
    probe_dir=$(cd / && go mod download -json "$probe" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -n "$probe_dir" ]] || { log "go mod download $probe: no module directory"; exit 1; }
    (cd "$probe_dir" && GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-X main.versionTag=$GRPC_HEALTH_PROBE_VERSION" -o "$bin/grpc-health-probe" .)
  fi

  # grpcurl, the same way (download the pinned version, build in place);
  # `grpcurl -version` prints "grpcurl <version>" when main.version is set,
  # as upstream releases do.
  if [[ -x "$bin/grpcurl" ]] && "$bin/grpcurl" -version 2>&1 | grep -qxF "grpcurl $GRPCURL_VERSION"; then
    log "grpcurl $GRPCURL_VERSION already installed"
  else
    grpcurl="github.com/fullstorydev/grpcurl@$GRPCURL_VERSION"
    log "go build -o bin/grpcurl $grpcurl"
    grpcurl_dir=$(cd / && go mod download -json "$grpcurl" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -n "$grpcurl_dir" ]] || { log "go mod download $grpcurl: no module directory"; exit 1; }
    (cd "$grpcurl_dir" && GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-X main.version=$GRPCURL_VERSION" -o "$bin/grpcurl" ./cmd/grpcurl)
  fi
  echo "$go_want" >"$bin/.stamp"
fi

if [[ $py_done == 0 ]]; then
  rm -f "$venv/.stamp"
  py=${PYTHON:-python3}
  if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv $venv ($($py --version 2>&1))"
    "$py" -m venv "$venv"
  fi
  log "pip install -r tests/interop/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$dir/requirements.txt"
  "$venv/bin/python" -c 'import grpc, grpc_tools.protoc; print("setup-interop: python grpcio", grpc.__version__)' >&2
  echo "$py_want" >"$venv/.stamp"
fi
if [[ $python == 0 ]]; then
  log "--no-python: skipping the chat peers (they need grpcio-tools' protoc)"
elif [[ $chat_done == 0 ]]; then
  rm -f "$bin/.chat-stamp"
  # protoc-gen-go at the protobuf runtime version the chat module uses, so
  # the generated code and the runtime agree.
  pgg_version=$(cd "$chat" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
  install_plugin() { # binary package version
    # `protoc-gen-go v1.36.10`, `protoc-gen-go-grpc 1.6.2`: compare the last word.
    local have
    have=$([[ -x "$bin/$1" ]] && "$bin/$1" --version 2>&1 | awk '{print $NF}' || true)
    if [[ "${have#v}" == "${3#v}" ]]; then
      return
    fi
    log "go install $2@$3"
    (cd / && GOBIN="$bin" GOFLAGS=-buildvcs=false go install -trimpath "$2@$3")
  }
  install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$pgg_version"
  install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

  log "generating tests/interop/chat/{chatpb,pygen} from proto/chat.proto"
  rm -rf "$chat/chatpb" "$chat/pygen"
  mkdir -p "$chat/pygen"
  # go_package is "grpcchat.test/chatpb" and the chat module is
  # "grpcchat.test", so module= puts the Go files in chat/chatpb/.
  "$venv/bin/python" -m grpc_tools.protoc -I "$root/proto" \
    --plugin=protoc-gen-go="$bin/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
    --go_out="$chat" --go_opt=module=grpcchat.test \
    --go-grpc_out="$chat" --go-grpc_opt=module=grpcchat.test \
    --python_out="$chat/pygen" --grpc_python_out="$chat/pygen" \
    chat.proto

  log "go build -o bin/go-chat-client ./chat/goclient"
  (cd "$chat" && go build -trimpath -o "$bin/go-chat-client" ./goclient)
  echo "$chat_want" >"$bin/.chat-stamp"
fi
log "done in $((SECONDS - start))s"
