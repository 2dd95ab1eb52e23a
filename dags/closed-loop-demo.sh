#!/usr/bin/env bash
# The closed loop, to watch: bash dags/closed-loop-demo.sh
#
# Starts `sluice serve` on a scratch folder with dags/example-closed-loop.yaml, sends live
# traffic with ground-truth feedback, and narrates: the first model is trained, gated and
# canaried into production; the traffic shifts, the live monitor finds the drift, the drift
# starts a retrain on the fresh data, which is canaried in turn; then a deliberately worse
# candidate is trained and rolled back by its analysis. Everything stays on 127.0.0.1; the
# server and the traffic loop are stopped by pid when the script ends. Takes about a minute
# (plus a build of Sluice the first time). Needs curl.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${SLUICE:-}" ]; then
  echo "building Sluice (cargo build --release; minutes the first time) ..."
  (cd "$repo" && cargo build --release --locked -q)
fi
sluice="${SLUICE:-$repo/target/release/sluice}"
command -v curl >/dev/null || { echo "the demo needs curl" >&2; exit 1; }

work="$(mktemp -d)"
mkdir -p "$work/dags"
cp "$repo/dags/example-closed-loop.yaml" "$work/dags/"
echo 0 > "$work/shift"
export SLUICE_HOME="$work/data"
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "(the demo's folder: $work)"
}
trap stop EXIT

"$sluice" serve --dags "$work/dags" --listen 127.0.0.1:0 --log-level warn 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$SLUICE_HOME/server.json" ] && break; sleep 0.1; done
url="$(sed -n 's/.*"url": *"\([^"]*\)".*/\1/p' "$SLUICE_HOME/server.json")"
token="$(cat "$SLUICE_HOME/admin.token")"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
api() { curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
say "sluice serve is up at $url (data folder $SLUICE_HOME)"

# Live traffic: customers drawn from the world (tenure and spend moved by its shift), each
# prediction followed by the truth as feedback (the generator's rule).
traffic() {
  while :; do
    k=$(cat "$work/shift")
    t=$((RANDOM % 72)); s=$((10 + RANDOM % 140)); c=$((RANDOM % 10))
    if { [ $t -lt 18 ] && [ $c -gt 4 ]; } || { [ $t -gt 48 ] && [ $s -gt 110 ]; }; then y=1; else y=0; fi
    answer=$(api -X POST "$url/api/v1/models/churn/predict" -d "{\"rows\": [[$((t + k)), $((s + k)), $c]]}" || true)
    id=$(printf '%s' "$answer" | sed -n 's/.*"request_id":"\([^"]*\)".*/\1/p')
    [ -n "$id" ] && api -X POST "$url/api/v1/models/churn/feedback" -d "{\"request_id\": \"$id\", \"label\": \"$y\"}" >/dev/null
    sleep 0.02
  done
}
traffic &
pids+=($!)

wait_run() {
  while :; do
    r=$(api "$url/api/v1/runs/$1/wait?timeout_s=30")
    case "$r" in *'"done":true'*) break ;; esac
  done
  printf '%s' "$r" | sed -n 's/.*"state":"\([a-z]*\)".*/\1/p' | head -1
}
newest_run() { api "$url/api/v1/runs?pipeline=churn-closed-loop&limit=1" | sed -n 's/.*"runs":\[{"v":[0-9]*,"id":\([0-9]*\).*/\1/p'; }

say "1. The first model: train, register, gate, canary (20%, analysis, 60%, analysis), promote"
"$sluice" trigger churn-closed-loop >/dev/null
run=$(newest_run)
echo "run $run: $(wait_run "$run")"
"$sluice" rollout status churn
"$sluice" models

say "2. The world shifts: tenure and spend move by 30 (the warehouse's fresh data too)"
echo 30 > "$work/dags/world.txt"
echo 30 > "$work/shift"
echo "waiting for the live monitor to find the drift and start a retrain ..."
while [ "$(newest_run)" = "$run" ]; do sleep 1; done
run=$(newest_run)
curl -s -H "Authorization: Bearer $token" "$url/api/v1/models/churn/drift" | sed 's/,"columns".*//'; echo
echo "run $run (started by the drift event): $(wait_run "$run")"
"$sluice" rollout status churn

say "3. A deliberately worse candidate (trained on inverted labels): its analysis rolls it back"
"$sluice" trigger churn-closed-loop -p flip=1 -p min_auc=0 >/dev/null
run=$(newest_run)
echo "run $run: $(wait_run "$run")"
"$sluice" rollout status churn
"$sluice" model show churn --history | tail -n 8
say "production stayed on the retrained version; the audit log has every move (sluice audit)"
