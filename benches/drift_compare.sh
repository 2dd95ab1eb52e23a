#!/usr/bin/env bash
# Drift of 1,000,000 x 20 numeric columns, KS and PSI: Sluice (benches/drift.rs) and a SciPy
# loop over the same columns (benches/drift_scipy.py), in one run. Python: $PYTHON, else the
# test venv (target/py, which tests/run.sh makes with SciPy).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-target/py/bin/python}"
cargo bench --bench drift --locked 2>/dev/null | grep -E '^(drift|sluice)'
"$python" benches/drift_scipy.py
