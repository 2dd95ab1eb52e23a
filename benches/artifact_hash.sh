#!/usr/bin/env bash
# Registering a large file as an artifact, end to end, next to baselines taken in the same run:
#   bash benches/artifact_hash.sh [SIZE_MIB]     (default 1024; needs target/release/sluice)
# Prints: sha256sum of the file (coreutils, the peer), a `sluice run` whose step hard-links the
# file into its run folder without declaring it, the same run declaring it as an artifact (so
# the difference is hashing + placing), and whether the stored file is the step's (no copy).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
bin=target/release/sluice
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
dir=$(mktemp -d /var/tmp/sluice-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
head -c "${size}M" /dev/urandom > "$dir/big.bin"
sync
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

cat > "$dir/plain.yaml" <<YAML
name: plain
steps:
  keep:
    process: {shell: 'ln "$dir/big.bin" "\$SLUICE_RUN_DIR/big.bin"'}
YAML
cat > "$dir/kept.yaml" <<YAML
name: kept
steps:
  keep:
    process: {shell: 'ln "$dir/big.bin" "\$SLUICE_RUN_DIR/big.bin"'}
    artifacts: {big: big.bin}
YAML

cat "$dir/big.bin" > /dev/null # warm the page cache for every contestant alike
t0=$(now); sha256sum "$dir/big.bin" > /dev/null; t1=$(now)
peer=$(secs "$t0" "$t1")
t0=$(now); "$bin" --data-dir "$dir/data1" run -q "$dir/plain.yaml"; t1=$(now)
plain=$(secs "$t0" "$t1")
t0=$(now); "$bin" --data-dir "$dir/data2" run -q "$dir/kept.yaml"; t1=$(now)
kept=$(secs "$t0" "$t1")
stored=$(find "$dir/data2/artifacts/sha256" -type f | head -1)
same=no; [ "$(stat -c %i "$stored")" = "$(stat -c %i "$dir/big.bin")" ] && same=yes
mib_s() { echo "scale=0; $size / $1" | bc; }
echo "| file | ${size} MiB |"
echo "| sha256sum (coreutils) | ${peer} s, $(mib_s "$peer") MiB/s |"
echo "| sluice run, file not declared | ${plain} s |"
echo "| sluice run, file declared as an artifact | ${kept} s |"
echo "| hashing and placing: the difference | $(secs "$plain" "$kept") s, $(mib_s "$(secs "$plain" "$kept")") MiB/s |"
echo "| the stored file is the step's file (same inode: no second copy) | ${same} |"
