#!/usr/bin/env bash
# Registering a large file as an artifact, end to end, next to baselines taken in the same run:
#   bash benches/artifact_hash.sh [SIZE_MIB [FOLDER]]   (1024 MiB in /var/tmp by default; needs
#   target/release/sluice). FOLDER=/dev/shm (tmpfs) takes the disk out of the figures.
# Prints: sha256sum of the file (coreutils, the peer), a `sluice run` whose step hard-links the
# file into its run folder without declaring it, the same run declaring it as an artifact (so
# the difference is hashing + placing), whether the stored file is the step's (no copy), and
# the same declared run in an encrypted data folder (the file encrypted into the store beside
# its hashing), with what encryption adds as a share of registering in clear.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
bin=target/release/sluice
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
dir=$(mktemp -d "${2:-/var/tmp}/sluice-bench.XXXXXX")
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

# The same with a step that writes the file itself (a copy: its pages are not on disk yet, as
# a training step's fresh model is not), so a clear store must sync them too.
for v in plain kept; do sed 's/ln "/cp "/' "$dir/$v.yaml" > "$dir/$v-cp.yaml"; done

cat "$dir/big.bin" > /dev/null # warm the page cache for every contestant alike
t0=$(now); sha256sum "$dir/big.bin" > /dev/null; t1=$(now)
peer=$(secs "$t0" "$t1")
t0=$(now); "$bin" --data-dir "$dir/data1" run -q "$dir/plain.yaml"; t1=$(now)
plain=$(secs "$t0" "$t1")
t0=$(now); "$bin" --data-dir "$dir/data2" run -q "$dir/kept.yaml"; t1=$(now)
kept=$(secs "$t0" "$t1")
"$bin" key generate "$dir/data.key" > /dev/null 2>&1
t0=$(now); SLUICE_ENCRYPTION_KEY_FILE="$dir/data.key" "$bin" --data-dir "$dir/data3" run -q "$dir/kept.yaml"; t1=$(now)
sealed=$(secs "$t0" "$t1")
t0=$(now); "$bin" --data-dir "$dir/data4" run -q "$dir/plain-cp.yaml"; t1=$(now)
plain_cp=$(secs "$t0" "$t1"); rm -rf "$dir/data4"; sync
t0=$(now); "$bin" --data-dir "$dir/data5" run -q "$dir/kept-cp.yaml"; t1=$(now)
kept_cp=$(secs "$t0" "$t1"); rm -rf "$dir/data5"; sync
t0=$(now); SLUICE_ENCRYPTION_KEY_FILE="$dir/data.key" "$bin" --data-dir "$dir/data6" run -q "$dir/kept-cp.yaml"; t1=$(now)
sealed_cp=$(secs "$t0" "$t1")
stored=$(find "$dir/data2/artifacts/sha256" -type f | head -1)
same=no; [ "$(stat -c %i "$stored")" = "$(stat -c %i "$dir/big.bin")" ] && same=yes
mib_s() { echo "scale=0; $size / $1" | bc; }
echo "| file | ${size} MiB |"
echo "| sha256sum (coreutils) | ${peer} s, $(mib_s "$peer") MiB/s |"
echo "| sluice run, file not declared | ${plain} s |"
echo "| sluice run, file declared as an artifact | ${kept} s |"
echo "| hashing and placing: the difference | $(secs "$plain" "$kept") s, $(mib_s "$(secs "$plain" "$kept")") MiB/s |"
echo "| the stored file is the step's file (same inode: no second copy) | ${same} |"
echo "| sluice run, declared, encrypted folder | ${sealed} s |"
echo "| registering encrypted: the difference | $(secs "$plain" "$sealed") s, $(mib_s "$(secs "$plain" "$sealed")") MiB/s |"
echo "| encryption's cost, share of registering in clear | $(echo "scale=1; 100 * ($sealed - $kept) / ($kept - $plain)" | bc) % |"
echo "| a step that writes the file: not declared | ${plain_cp} s |"
echo "| a step that writes the file: declared, clear store | ${kept_cp} s |"
echo "| a step that writes the file: declared, encrypted folder | ${sealed_cp} s |"
echo "| encryption's cost there, share of registering in clear | $(echo "scale=1; 100 * ($sealed_cp - $kept_cp) / ($kept_cp - $plain_cp)" | bc) % |"
