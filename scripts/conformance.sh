#!/usr/bin/env bash
# Every conformance suite we run, in one table:
#
#   scripts/conformance.sh            run them all, rewrite the table in docs/conformance.md
#   scripts/conformance.sh --print    run them all, print the table, leave the doc alone
#
# Each suite has a script of its own that prints one line per direction,
#
#   RESULT <tab> peer <tab> version <tab> direction <tab> cases <tab> passed [<tab> note]
#
# (a note says why the failures of that line are expected; a line whose
# cases and passed differ without one is marked as failing)
# (scripts/conformance-go.sh, scripts/conformance-java.sh,
# scripts/conformance-connect.sh); our HTTP/2 edge-case server and the peer
# quirks are cargo tests, counted here. This script runs them one after the
# other (they share two cores), renders the lines as a Markdown table and puts
# it between the markers in docs/conformance.md. It exits non-zero if any
# suite had a failure, after writing what it found.
#
# The test command (scripts/test.sh) runs the same suites as cargo tests and
# fails on any unexpected failure; this script is for the record.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$HOME/go/bin:$PATH"

print_only=0
[[ ${1:-} == --print ]] && print_only=1

results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0

run_script() {
  local script=$1
  echo "==> $script" >&2
  if ! "$script" | tee /dev/stderr | grep -P '^RESULT\t' >>"$results"; then
    echo "conformance: $script reported failures (or none of its results)" >&2
    status=1
  fi
  # `tee` hides the script's own status from `if`: check it.
  if [[ ${PIPESTATUS[0]} -ne 0 ]]; then status=1; fi
}

# A cargo test target as one line of the table.
run_cargo_test() {
  local target=$1 peer=$2 direction=$3
  echo "==> cargo test --test $target" >&2
  local out passed failed
  out=$(cargo test --quiet --test "$target" 2>&1)
  passed=$(grep -oP 'test result: \w+\. \K\d+(?= passed)' <<<"$out" | head -1)
  failed=$(grep -oP 'test result: \w+\. \d+ passed; \K\d+(?= failed)' <<<"$out" | head -1)
  if [[ -z $passed ]]; then
    echo "$out" >&2
    status=1
    passed=0
    failed=0
  fi
  [[ ${failed:-0} -eq 0 ]] || { echo "$out" >&2; status=1; }
  printf 'RESULT\t%s\t%s\t%s\t%s\t%s\n' "$peer" "-" "$direction" "$((passed + failed))" "$passed" >>"$results"
}

run_script scripts/conformance-go.sh
[[ -x scripts/conformance-java.sh ]] && run_script scripts/conformance-java.sh
[[ -x scripts/conformance-connect.sh ]] && run_script scripts/conformance-connect.sh
[[ -f tests/client_h2_edge.rs ]] && run_cargo_test client_h2_edge \
  "our misbehaving HTTP/2 server (tests/client_h2_edge.rs)" "its edge cases → our client"
run_cargo_test server_peer_quirks \
  "peer habits played with raw frames (tests/server_peer_quirks.rs)" "→ our server"

table=$(
  echo "| peer | version | direction | cases | passed |"
  echo "|---|---|---|---|---|"
  awk -F'\t' '{ mark = ($5 == $6) ? "" : ($7 != "" ? " (" $7 ")" : " **(failures)**"); printf "| %s | %s | %s | %s | %s%s |\n", $2, $3, $4, $5, $6, mark }' "$results"
  awk -F'\t' '{ c += $5; p += $6 } END { printf "| **all** | | | **%d** | **%d** |\n", c, p }' "$results"
)

if [[ $print_only == 1 ]]; then
  echo "$table"
  exit "$status"
fi

doc=docs/conformance.md
begin='<!-- conformance table: written by scripts/conformance.sh -->'
end='<!-- end of conformance table -->'
if ! grep -qF "$begin" "$doc"; then
  echo "conformance: $doc has no table markers" >&2
  exit 1
fi
stamp="Run on $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet || echo ' plus uncommitted changes'), by \`scripts/conformance.sh\`."
python3 - "$doc" "$begin" "$end" "$stamp" "$table" <<'PY'
import sys
path, begin, end, stamp, table = sys.argv[1:]
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(f"{head}{begin}\n{stamp}\n\n{table}\n{end}{tail}")
PY
echo "conformance: table written to $doc" >&2
exit "$status"
