#!/usr/bin/env bash
# MLflow's own client, one workload (benches/mlflow_client.py), side by side in one run:
# against `sluice serve`, against MLflow's tracking server (`mlflow server`, SQLite backend,
# one worker, its artifact proxy on a local folder), and against a server that answers `{}`
# to everything (what the client costs by itself).
#   bash benches/mlflow_compare.sh      (needs target/release/sluice; installs mlflow from PyPI
#                                        into target/bench-py on first use)
# Prints milliseconds per operation (medians) and Sluice's speed-up over MLflow's server.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/sluice
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
venv="$PWD/target/bench-py"
if ! "$venv/bin/python" -c 'import mlflow.server' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'mlflow==3.*'
fi
py="$venv/bin/python"
dir=$(mktemp -d /var/tmp/sluice-mlflow-bench.XXXXXX)
pids=()
cleanup() {
  # Each server runs in a process group of its own (MLflow's has workers): stop the group.
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL (MLflow's server takes 10 to 30 s to start here)
  for _ in $(seq 1 1200); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "nothing answers at $1" >&2
  return 1
}
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
  MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true

# Sluice.
mkdir -p "$dir/dags"
setsid "$bin" --data-dir "$dir/sluice" serve --dags "$dir/dags" --listen 127.0.0.1:0 2> "$dir/sluice.log" &
pids+=($!)
for _ in $(seq 1 300); do [ -s "$dir/sluice/server.json" ] && break; sleep 0.05; done
sluice_url=$("$py" -c "import json; print(json.load(open('$dir/sluice/server.json'))['url'])")
wait_for "$sluice_url/api/v1/health"

# MLflow's tracking server.
mlflow_port=$(free_port)
(cd "$dir" && exec setsid "$venv/bin/mlflow" server --backend-store-uri "sqlite:///$dir/mlflow.db" \
  --artifacts-destination "$dir/mlartifacts" --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
  > "$dir/mlflow.log" 2>&1) &
pids+=($!)
wait_for "http://127.0.0.1:$mlflow_port/health" || { tail -20 "$dir/mlflow.log" >&2; exit 1; }

# The floor: a server that does nothing (Python's standard library, Nagle off): `{}` to
# every write, and to reads the answers the workload gets, made once up front (10,000 points,
# 20 runs, a version), so the client's own cost of asking and parsing is all that is left.
floor_port=$(free_port)
setsid "$py" benches/mlflow_floor.py "$floor_port" &
pids+=($!)
wait_for "http://127.0.0.1:$floor_port/"

s=$(MLFLOW_TRACKING_TOKEN=$(cat "$dir/sluice/admin.token") "$py" benches/mlflow_client.py "$sluice_url")
m=$("$py" benches/mlflow_client.py "http://127.0.0.1:$mlflow_port")
f=$("$py" benches/mlflow_client.py "http://127.0.0.1:$floor_port" --floor)
# The same reads as bare HTTP (no MLflow objects made): what each server itself costs.
rs=$(MLFLOW_TRACKING_TOKEN=$(cat "$dir/sluice/admin.token") "$py" benches/mlflow_client.py "$sluice_url" --raw "$(cat "$dir/sluice/admin.token")")
rm=$("$py" benches/mlflow_client.py "http://127.0.0.1:$mlflow_port" --raw "")
"$py" - "$s" "$m" "$f" "$rs" "$rm" <<'PY'
import json, sys
s, m, f, rs, rm = (json.loads(a) for a in sys.argv[1:6])
assert s["search_found"] == m["search_found"], (s["search_found"], m["search_found"])
print(f"| operation (mlflow {__import__('mlflow').__version__} client) | Sluice | MLflow server | MLflow / Sluice | client floor | bare HTTP: Sluice | bare HTTP: MLflow | MLflow / Sluice |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for key, what in [
    ("log_metric", "`log_metric`, one point"),
    ("log_batch_1000", "`log_batch` of 1,000 metrics"),
    ("history_10000", "`get_metric_history`, 10,000 points"),
    ("search_filtered", f"`search_runs`, 200 runs, filtered ({s['search_found']} found)"),
    ("resolve_alias", "`get_model_version_by_alias`"),
]:
    fl = f"{f[key]:.2f} ms" if key in f else "-"
    raw = f"{rs[key]:.2f} ms | {rm[key]:.2f} ms | {rm[key] / rs[key]:.1f}x" if key in rs else "- | - | -"
    print(f"| {what} | {s[key]:.2f} ms | {m[key]:.2f} ms | {m[key] / s[key]:.1f}x | {fl} | {raw} |")
PY
