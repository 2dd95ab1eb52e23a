"""Writes generated tables and what SciPy (and NumPy's binning) makes of them, for tests/drift.rs.

usage: scipy_figures.py OUT_DIR

Each case is a reference.csv and a current.csv under OUT_DIR/<case>/ and, in expected.json,
per case and column: ks_2samp, wasserstein_distance (and the reference's standard deviation),
chi2_contingency over the categories in order of first appearance, and the Jensen-Shannon
distance and PSI of the shares binned as Evidently bins them.
"""
import csv
import json
import os
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

out = sys.argv[1]
rng = np.random.default_rng(20261207)


def numeric(n, shift=0.0, scale=1.0, kind="normal"):
    if kind == "exp":
        return rng.exponential(1.0 + shift, n)
    if kind == "int":
        return rng.integers(0, 40 + int(shift * 10), n).astype(float)
    return rng.normal(shift, scale, n)


def categorical(n, probs):
    return rng.choice(["red", "green", "blue", "amber", "violet"][: len(probs)], n, p=probs)


def case(name, n_ref, n_cur, shift):
    ref = {
        "x_normal": numeric(n_ref),
        "x_exp": numeric(n_ref, kind="exp"),
        "x_int": numeric(n_ref, kind="int"),
        "x_same": numeric(n_ref),
        "colour": categorical(n_ref, [0.4, 0.3, 0.2, 0.1]),
        "flag": categorical(n_ref, [0.7, 0.3]),
    }
    cur = {
        "x_normal": numeric(n_cur, shift=shift),
        "x_exp": numeric(n_cur, shift=shift, kind="exp"),
        "x_int": numeric(n_cur, shift=shift, kind="int"),
        "x_same": numeric(n_cur),
        "colour": categorical(n_cur, [0.4 - shift / 4, 0.3, 0.2, 0.1 + shift / 4]),
        "flag": categorical(n_cur, [0.7 - shift / 5, 0.3 + shift / 5]),
    }
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    for file, table in (("reference.csv", ref), ("current.csv", cur)):
        with open(os.path.join(folder, file), "w", newline="") as f:
            w = csv.writer(f)
            cols = list(table)
            w.writerow(cols)
            for row in zip(*(table[c] for c in cols)):
                w.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    expected = {}
    for col in ref:
        r, c = ref[col], cur[col]
        e = {}
        if r.dtype.kind == "f":
            ks = stats.ks_2samp(r, c)
            e["ks"] = [float(ks.statistic), float(ks.pvalue)]
            e["wasserstein"] = float(stats.wasserstein_distance(r, c))
            e["std"] = float(np.std(r))
            if len(np.unique(r)) > 20:
                edges = np.histogram_bin_edges(np.concatenate([r, c]), bins="sturges")
                rp = np.histogram(r, edges)[0] / len(r)
                cp = np.histogram(c, edges)[0] / len(c)
                e["edges"] = [float(x) for x in edges]
            else:
                keys = list(dict.fromkeys([*r, *c]))
                rp = np.array([np.sum(r == k) for k in keys]) / len(r)
                cp = np.array([np.sum(c == k) for k in keys]) / len(c)
        else:
            keys = list(dict.fromkeys([*r, *c]))
            table = np.array([[np.sum(r == k) for k in keys], [np.sum(c == k) for k in keys]])
            chi = stats.chi2_contingency(table)
            e["chi2"] = [float(chi.statistic), float(chi.pvalue)]
            rp, cp = table[0] / len(r), table[1] / len(c)
        e["jensen_shannon"] = float(distance.jensenshannon(rp, cp))
        fill = lambda p: np.where(p == 0, (min(p[p != 0]) / 1e6) if min(p[p != 0]) <= 0.0001 else 0.0001, p)
        rf, cf = fill(rp), fill(cp)
        e["psi"] = float(np.sum((rf - cf) * np.log(rf / cf)))
        expected[col] = e
    return expected


figures = {
    # Exact KS, samples of one size (SciPy's reflection formula).
    "equal": case("equal", 1000, 1000, 0.15),
    # Exact KS, sizes apart (SciPy's path counting).
    "unequal": case("unequal", 600, 900, 0.2),
    # Over 10,000 values: SciPy's asymptotic Kolmogorov distribution.
    "large": case("large", 12000, 30000, 0.15),
}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(figures, f)
print("scipy", __import__("scipy").__version__)
