#!/usr/bin/env bash
# Serving side by side (docs/benchmarks.md): the same 30-feature table, Sluice's MLP
# 30-32-16-2 under `sluice serve` and scikit-learn's MLP (32, 16) under MLflow's scoring
# server (`mlflow models serve --env-manager local`, 2 workers: the machine's 2 cores), the
# same load against both in one run (benches/predict.rs). Needs a Python with mlflow and
# scikit-learn: $PYTHON, else target/bench-py (made here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-target/bench-py/bin/python}"
if ! "$python" -c 'import mlflow.sklearn, sklearn' 2>/dev/null; then
  python3 -m venv target/bench-py
  target/bench-py/bin/pip install --quiet 'mlflow==3.*' 'scikit-learn==1.*'
  python=target/bench-py/bin/python
fi
work="$(mktemp -d)"
"$python" benches/predict_mlflow.py "$work/table.csv" "$work/model"
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PATH="$(dirname "$python"):$PATH" "$python" -m mlflow models serve -m "$work/model" --env-manager local \
  -h 127.0.0.1 -p "$port" -w 2 >"$work/mlflow.log" 2>&1 &
mlflow_pid=$!
trap 'kill $mlflow_pid 2>/dev/null; wait $mlflow_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.5; done
curl -sf "http://127.0.0.1:$port/ping" >/dev/null || { cat "$work/mlflow.log"; exit 1; }
"$python" -c 'import mlflow; print("mlflow", mlflow.__version__)'
PREDICT_BENCH_RATE="${PREDICT_BENCH_RATE:-500,2000}" PREDICT_BENCH_DATA="$work/table.csv" MLFLOW_SCORING_URL="http://127.0.0.1:$port" \
  cargo bench --bench predict --locked 2>/dev/null | grep -E '^(MLP|sluice|mlflow)'
