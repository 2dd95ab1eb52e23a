#!/usr/bin/env python3
"""Two `sluice` binaries side by side, alternating run by run on the same inputs, so that the
machine's drift hits both alike: the 40-step chain (warm data folder), `validate` of a 10,000-step
wide DAG, and a 10,000-step wide DAG of a trivial WASM plugin (fresh data folder each time).

    python3 benches/compare_binaries.py OLD_SLUICE NEW_SLUICE

Prints a Markdown table of medians and the ratio new/old (docs/benchmarks.md)."""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

old, new = sys.argv[1], sys.argv[2]
noop = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "plugins", "noop.wat")
work = tempfile.mkdtemp(prefix="sluice-compare-")
def write(name, text):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    return path
chain = write("chain.yaml", "name: chain\nsteps:\n" + "".join(
    f"  s{i}:\n    process: {{ command: [\"true\"] }}\n" + (f"    needs: [s{i-1}]\n" if i else "") for i in range(40)))
wide = write("wide.yaml", "name: wide\nsteps:\n" + "".join(
    f"  s{i}: {{ process: {{ command: [\"true\"] }} }}\n" for i in range(10000)))
wasm = write("wasm.yaml", "name: wasm-wide\nsteps:\n" + "".join(
    f"  s{i}: {{ wasm: {{ module: \"{os.path.abspath(noop)}\" }} }}\n" for i in range(10000)))

def timed(binary, data, args):
    start = time.perf_counter()
    out = subprocess.run([binary, "--data-dir", os.path.join(work, data)] + args, capture_output=True)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{binary} {args}: {out.stderr.decode()}")
    return took

bins = {"old": old, "new": new}
res = {k: {"chain": [], "validate": [], "wasm": []} for k in bins}
for rep in range(15):
    for k, b in bins.items():
        res[k]["chain"].append(timed(b, f"{k}-chain", ["run", "-q", chain]))
        res[k]["validate"].append(timed(b, f"{k}-validate", ["validate", wide]))
for rep in range(5):
    for k, b in bins.items():
        res[k]["wasm"].append(timed(b, f"{k}-wasm-{rep}", ["run", "-q", wasm]))
print("| scenario | old (median) | new (median) | new / old |")
print("| --- | --- | --- | --- |")
names = {"chain": "chain of 40 `true` steps, `sluice run` (median of 15)",
         "validate": "`sluice validate` of a 10,000-step wide DAG (median of 15)",
         "wasm": "10,000 trivial WASM plugin steps, `sluice run`, fresh folder (median of 5)"}
for what, label in names.items():
    o = statistics.median(res["old"][what]) * 1000
    n = statistics.median(res["new"][what]) * 1000
    print(f"| {label} | {o:.1f} ms | {n:.1f} ms | {n / o:.3f} |")
shutil.rmtree(work, ignore_errors=True)
