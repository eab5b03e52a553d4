#!/usr/bin/env bash
# Fetches grpc-java's interop peers for tests/interop_grpc_java.rs and
# scripts/conformance-java.sh:
#
#   tests/interop/java/lib/   io.grpc:grpc-interop-testing (version pinned in
#                             tests/interop/java/pom.xml) and every jar it
#                             needs at run time, both transports (Netty,
#                             OkHttp) included. Run with
#                               java -cp 'tests/interop/java/lib/*' \
#                                 io.grpc.testing.integration.TestServiceClient ...
#                             or ...TestServiceServer.
#
# Nothing is compiled: Maven only resolves the pom's one dependency and
# `mvn dependency:copy-dependencies` copies the jars (from Maven Central,
# through the local repository ~/.m2) into lib/, which git ignores.
# Idempotent: when the pom, this script and the Java and Maven versions are
# what the last successful run saw (lib/.stamp), it returns at once.
# Options: --force fetches again.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/tests/interop/java"
lib="$dir/lib"
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    *) echo "setup-java: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { echo "setup-java: $*" >&2; }

command -v java >/dev/null || { log "java is not installed (need Java >= 11; 17 is tested)"; exit 1; }
command -v mvn >/dev/null || { log "mvn (Maven) is not installed"; exit 1; }

# Concurrent runs (parallel test processes) wait for each other. The lock
# lives beside lib/, which is replaced whole below.
exec 9>"$dir/.setup.lock"
flock 9

stamp_input() {
  {
    java -version 2>&1
    mvn -v 2>&1 | head -1
    sha256sum <"$dir/pom.xml"
    sha256sum <"$root/scripts/setup-java.sh"
  } | sha256sum | cut -d' ' -f1
}
want=$(stamp_input)
if [[ $force == 0 && -f "$lib/.stamp" && "$(cat "$lib/.stamp")" == "$want" ]] &&
  compgen -G "$lib/grpc-interop-testing-*.jar" >/dev/null; then
  log "up to date ($lib)"
  exit 0
fi

start=$SECONDS
version=$(sed -n 's:.*<grpc.version>\(.*\)</grpc.version>.*:\1:p' "$dir/pom.xml")
log "mvn dependency:copy-dependencies (io.grpc:grpc-interop-testing:$version)"
# Into a fresh directory first, so an interrupted run never leaves a lib/
# with half the jars (or jars of two versions) behind a valid stamp.
tmp="$dir/lib.tmp"
rm -rf "$tmp"
mvn -B -q -Dstyle.color=never -f "$dir/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$tmp" -DincludeScope=runtime >&2
rm -rf "$lib"
mv "$tmp" "$lib"
echo "$want" >"$lib/.stamp"
log "$(find "$lib" -name '*.jar' | wc -l) jars in $lib; done in $((SECONDS - start))s"
