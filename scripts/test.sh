#!/usr/bin/env bash
# The whole test suite: installs the test peers (scripts/peers.sh), then gofmt, go vet and
# go test -race over every package. Extra arguments go to go test (e.g. -run TestX ./agent).
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/peers.sh || { echo "test: installing peers failed" >&2; exit 1; }

status=0
checks=()
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.peers/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need formatting:"; echo "$unformatted"; status=1
  checks+=("FAIL	gofmt: $(echo $unformatted)")
fi
if ! go vet ./...; then
  status=1
  checks+=("FAIL	go vet")
fi

log=$(mktemp)
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(./...)
go test -race -count=1 -timeout 30m "${args[@]}" 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
[ "$test_status" -eq 0 ] || status=1

echo
echo "== go test summary =="
grep -E '^(ok|FAIL|--- FAIL|panic:)' "$log" || true
for c in "${checks[@]}"; do echo "$c"; done
rm -f "$log"
[ "$status" -eq 0 ] && echo "== all tests passed ==" || echo "== FAILED =="
exit "$status"
