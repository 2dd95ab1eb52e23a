"""The SciPy side of benches/drift_compare.sh: the same table sizes, each column's
ks_2samp, and PSI over NumPy's Sturges bins, in a loop over the columns (what a Python drift
job does). Prints the best of three per method."""
import os
import sys
import time

import numpy as np
from scipy import stats

rows = int(os.environ.get("DRIFT_BENCH_ROWS", "1000000"))
cols = 20
rng = np.random.default_rng(7)
reference = rng.standard_normal((cols, rows))
current = rng.standard_normal((cols, rows)) + np.array([0.05 if c % 2 == 0 else 0.0 for c in range(cols)])[:, None]


def psi(r, c):
    edges = np.histogram_bin_edges(np.concatenate([r, c]), bins="sturges")
    rp = np.histogram(r, edges)[0] / len(r)
    cp = np.histogram(c, edges)[0] / len(c)
    rp = np.where(rp == 0, 0.0001, rp)
    cp = np.where(cp == 0, 0.0001, cp)
    return float(np.sum((rp - cp) * np.log(rp / cp)))


for name, f in (("ks", lambda r, c: stats.ks_2samp(r, c).pvalue < 0.05), ("psi", lambda r, c: psi(r, c) >= 0.1)):
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        drifted = sum(bool(f(reference[i], current[i])) for i in range(cols))
        best = min(best, time.perf_counter() - t)
    print(f"scipy  {name:<4} {best:8.3f} s  ({drifted} of {cols} columns drifted)", flush=True)
