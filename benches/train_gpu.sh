#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, on a machine with an NVIDIA GPU, CUDA and PyTorch
# (the lent H100 machine, through the `device` tool): Sluice's GPU path against its CPU path and against
# PyTorch on the same GPU, same model, batch and data size; then the GPU tests, which must
# not skip there.
#   bash benches/train_gpu.sh [rows]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
export SLUICE_REQUIRE_GPU=1 SLUICE_REQUIRE_NVRTC=1
cargo test --release -q -p sluice-worker --lib train:: 2>&1 | tail -3
TRAIN_BENCH_GPU_ROWS="$rows" cargo bench -q --bench train 2>&1 | tee /tmp/sluice-train-bench.txt
python3 benches/train_torch.py "$rows" 3 | tee /tmp/torch-train-bench.txt
python3 - <<'PY'
import re
ours = open("/tmp/sluice-train-bench.txt").read()
torch = open("/tmp/torch-train-bench.txt").read()
rate = lambda line: float(re.search(r"([0-9.]+) rows/s", line).group(1))
gpu = rate([l for l in ours.splitlines() if l.startswith("cuda:")][0])
base = rate(torch.strip().splitlines()[-1])
print(f"sluice gpu / pytorch: {gpu / base:.2f}x (target >= 0.8)")
PY
