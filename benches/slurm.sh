#!/usr/bin/env bash
# Slurm placement, measured on the test cluster (docs/benchmarks.md):
#   bash benches/slurm.sh   (needs target/release/sluice; starts tests/slurm.sh's cluster
#                            unless SLURM_CONF already names a running one)
# 1. A chain of 10 `true` steps run with `--slurm debug`, against 10 sequential
#    `sbatch --wait` of the same command in the same run: the ratio is the engine's overhead
#    on top of Slurm's own scheduling.
# 2. A 1,000-item mapped step: the time from `sluice run` until squeue lists all 1,000 tasks
#    (one `sbatch --array`).
# 3. While those 1,000 jobs are in flight (pending or running `sleep`), the engine's CPU over
#    20 s (its own and its reaped children's: the squeue calls), as a share of one core. The
#    engine is then SIGKILLed and the jobs scancelled by name.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/release/sluice
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
started_here=
if ! sinfo -h >/dev/null 2>&1; then
  source tests/slurm.sh
  start_slurm
  started_here=1
fi
dir=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  scancel --me --name="$(cat "$dir/array-name" 2>/dev/null || echo none)" 2>/dev/null || true
  [ -n "$started_here" ] && stop_slurm
  rm -rf "$dir"
}
trap cleanup EXIT
now() { date +%s.%N; }

# 1. The chain.
{
  printf 'name: chain\nsteps:\n'
  prev=
  for i in $(seq 1 10); do
    printf '  s%d:\n    process: {command: ["true"]}\n' "$i"
    [ -n "$prev" ] && printf '    needs: [%s]\n' "$prev"
    prev=s$i
  done
} > "$dir/chain.yaml"
cd "$dir"
t0=$(now)
for i in $(seq 1 10); do sbatch --wait --quiet --output=/dev/null -p debug --wrap=true; done
t1=$(now)
"$bin" --data-dir "$dir/data" run -q --slurm debug "$dir/chain.yaml" >/dev/null
t2=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
  printf "| 10 sequential `sbatch --wait --wrap=true` (the baseline, same run) | %.2f s |\n", b - a;
  printf "| a chain of 10 `true` steps, `sluice run --slurm debug` (release) | %.2f s (ratio %.2fx) |\n", c - b, (c - b) / (b - a);
}'

# 2. and 3. A 1,000-item map.
printf 'name: wide\nsteps:\n  fan:\n    map: [%s]\n    slurm: {partition: debug}\n    process: {command: [sleep, "120"]}\n' \
  "$(seq -s, 0 999)" > "$dir/wide.yaml"
t3=$(now)
"$bin" --data-dir "$dir/wide" run -q "$dir/wide.yaml" >/dev/null 2>&1 &
pid=$!
name=
for _ in $(seq 1 500); do
  name=$(squeue -h --me -o '%j' | grep -m1 -- '-r1-fan\.a1$' || true)
  if [ -n "$name" ] && [ "$(squeue -h -r --me --name="$name" | wc -l)" -ge 1000 ]; then break; fi
  sleep 0.02
done
t4=$(now)
echo "$name" > "$dir/array-name"
tasks=$(squeue -h -r --me --name="$name" | wc -l)
arrays=$(squeue -h --me -o '%F' --name="$name" | sort -u | wc -l)
awk -v a="$t3" -v b="$t4" -v n="$tasks" -v j="$arrays" 'BEGIN {
  printf "| a 1,000-item map: from `sluice run` until squeue lists every task | %.2f s (%d tasks in %d array) |\n", b - a, n, j;
}'
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat"; }
own() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
o0=$(own)
w0=$(now)
sleep 20
c1=$(cpu)
o1=$(own)
w1=$(now)
running=$(squeue -h -r --me --name="$name" -t RUNNING | wc -l)
pending=$(squeue -h -r --me --name="$name" -t PENDING | wc -l)
awk -v c0="$c0" -v c1="$c1" -v o0="$o0" -v o1="$o1" -v w0="$w0" -v w1="$w1" -v t="$ticks" -v r="$running" -v p="$pending" 'BEGIN {
  printf "| the engine watching 1,000 jobs in flight (%d running, %d pending) for 20 s | %.1f%% of one core: %.1f%% its own, %.1f%% its squeue children |\n", r, p, 100 * (c1 - c0) / t / (w1 - w0), 100 * (o1 - o0) / t / (w1 - w0), 100 * ((c1 - c0) - (o1 - o0)) / t / (w1 - w0);
}'
