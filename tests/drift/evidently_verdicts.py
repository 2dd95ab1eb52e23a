"""Evidently's verdicts on the tables of scipy_figures.py, for tests/drift.rs: per case, each
column's test and whether it drifted, the share of drifted columns and the table's verdict
(Evidently's DataDriftPreset with its defaults).

usage: evidently_verdicts.py TABLES_DIR"""
import json
import os
import sys
import warnings

import pandas as pd

warnings.filterwarnings("ignore")
from evidently.legacy.metric_preset import DataDriftPreset  # noqa: E402
from evidently.legacy.report import Report  # noqa: E402

out = {}
base = sys.argv[1]
for case in sorted(os.listdir(base)):
    folder = os.path.join(base, case)
    if not os.path.isfile(os.path.join(folder, "reference.csv")):
        continue
    ref = pd.read_csv(os.path.join(folder, "reference.csv"))
    cur = pd.read_csv(os.path.join(folder, "current.csv"))
    report = Report(metrics=[DataDriftPreset()])
    report.run(reference_data=ref, current_data=cur)
    for m in report.as_dict()["metrics"]:
        r = m["result"]
        if "drift_by_columns" in r:
            out[case] = {
                "columns": {c: {"test": v["stattest_name"], "drifted": bool(v["drift_detected"])} for c, v in r["drift_by_columns"].items()},
                "share": r["share_of_drifted_columns"],
                "drifted": bool(r["dataset_drift"]),
            }
print(json.dumps(out))
