#!/usr/bin/env bash
# Runs per second through `sluice serve` (docs/scale.md, docs/benchmarks.md):
#   bash benches/runs_per_second.sh [RUNS [SENDERS]]   (500 runs from 8 senders by default;
#   needs target/release/sluice and curl)
# Starts the release server on a scratch folder (loopback), posts RUNS runs of a one-step
# pipeline (`true`) from SENDERS parallel curl loops, and waits until every one has succeeded
# (each run durable: its record, its claim, its events, one flush per batch). Beside it, in
# the same run, the same number of `true` processes spawned from the same number of parallel
# loops: the floor of the work the runs do. The server is stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-500}
senders=${2:-8}
bin=$PWD/target/release/sluice
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
mkdir -p "$dir/dags"
printf 'name: one\nsteps:\n  only: {process: {command: ["true"]}}\n' > "$dir/dags/one.yaml"
"$bin" --data-dir "$dir/data" serve --dags "$dir/dags" --listen 127.0.0.1:0 --log-level error 2>"$dir/serve.log" &
pid=$!
for _ in $(seq 1 100); do [ -s "$dir/data/server.json" ] && break; sleep 0.1; done
url=$(sed -E 's/.*"url":"([^"]+)".*/\1/' "$dir/data/server.json")
token=$(cat "$dir/data/admin.token")
now() { date +%s.%N; }

# The floor: RUNS spawns of `true` from SENDERS loops.
t0=$(now)
seq 1 "$runs" | xargs -P "$senders" -n 1 sh -c 'true' _
t1=$(now)

# The runs, posted from SENDERS loops, then waited for.
t2=$(now)
seq 1 "$runs" | xargs -P "$senders" -n 1 sh -c \
  'curl -s -o /dev/null -w "%{http_code}\n" -X POST -H "Authorization: Bearer $1" -H "Content-Type: application/json" -d "{}" "$2/api/v1/pipelines/one/runs"' _ "$token" "$url" \
  | sort | uniq -c > "$dir/codes"
posted=$(now)
# Runs the API lists with this query (one page of up to 1,000).
count() { curl -s -H "Authorization: Bearer $token" "$url/api/v1/runs?limit=1000$1" | { grep -o '"id":' || true; } | wc -l; }
while :; do
  if [ $(($(count '&state=running') + $(count '&state=pending'))) -eq 0 ]; then break; fi
  sleep 0.05
done
t3=$(now)
done_runs=$(count '&state=succeeded')
total=$(count '')
echo "HTTP answers: $(tr '\n' ' ' < "$dir/codes")"
awk -v r="$runs" -v s="$senders" -v a="$t0" -v b="$t1" -v c="$t2" -v p="$posted" -v d="$t3" -v ok="$done_runs" -v all="$total" 'BEGIN {
  printf "| %d runs of one `true` step, %d senders, `sluice serve` (release, loopback) | %.2f s, %.0f runs/s (%d of %d succeeded; posting took %.2f s) |\n", r, s, d - c, r / (d - c), ok, all, p - c;
  printf "| %d spawns of `true` from %d loops (the floor, same run) | %.2f s, %.0f /s (ratio %.1fx) |\n", r, s, b - a, r / (b - a), (d - c) / (b - a);
}'
