#!/usr/bin/env bash
# CPU training throughput of the issue's model (MLP 256-512-512-2, batch 256) on a synthetic
# table: rows x 256 features. The epoch time is (time of 3 epochs - time of 1 epoch) / 2, so
# reading the CSV and writing the model cancel out.
#   bash benches/train_cpu.sh [rows]     (default 16384; needs a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-16384}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 - "$rows" "$dir/data.csv" <<'PY'
import random, sys
rows, path = int(sys.argv[1]), sys.argv[2]
random.seed(1)
w = [random.gauss(0, 1) for _ in range(256)]
with open(path, "w") as f:
    f.write(",".join(f"f{i}" for i in range(256)) + ",label\n")
    for _ in range(rows):
        x = [random.gauss(0, 1) for _ in range(256)]
        f.write(",".join(f"{v:.4f}" for v in x) + f",{int(sum(a * b for a, b in zip(w, x)) > 0)}\n")
PY
run() {
  cat > "$dir/p.yaml" <<YAML
name: train-bench
steps:
  t:
    train: { model: mlp, data: $dir/data.csv, label: label, hidden: [512, 512], batch_size: 256, epochs: $1, validation: 0, device: cpu }
YAML
  local start end
  start=$(date +%s.%N)
  ./target/release/sluice --data-dir "$dir/d$1" run -q "$dir/p.yaml" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}
cargo build --release -q
one=$(run 1)
three=$(run 3)
python3 -c "
one, three, rows = $one, $three, $rows
epoch = (three - one) / 2
print(f'rows {rows}: 1 epoch run {one:.2f} s, 3 epochs {three:.2f} s, one epoch {epoch:.3f} s = {rows / epoch:.0f} rows/s')"
