"""One MLflow client workload, timed: run by benches/mlflow_compare.sh against Sluice, against
MLflow's own tracking server, and against a server that answers `{}` to everything (the
client's own floor), with the same `mlflow` client in the same run.

    python benches/mlflow_client.py URI [--floor | --raw TOKEN]

`--floor`: against benches/mlflow_floor.py (which answers every call at once); `--raw`: the
reads as bare HTTP requests (`requests`, no MLflow objects made), on data made first through
MLflow's client: what the server itself costs.

Prints one JSON object: milliseconds per operation (medians).
"""

import json
import os
import statistics
import sys
import tempfile
import time

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

uri = sys.argv[1]
floor = "--floor" in sys.argv
mlflow.set_tracking_uri(uri)
c = MlflowClient()


def timed(fn, n):
    """Median milliseconds of `n` calls of `fn`."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


out = {}
now = int(time.time() * 1000)
if floor:
    # The floor server answers writes with `{}` and reads with canned answers.
    run_id = "0" * 32
    out["log_metric"] = timed(lambda: c.log_metric(run_id, "loss", 0.5, now, 1), 300)
    out["log_batch_1000"] = timed(
        lambda: c.log_batch(run_id, metrics=[Metric("m", float(i), now, i) for i in range(1000)]), 30
    )
    out["history_10000"] = timed(lambda: c.get_metric_history(run_id, "h"), 10)
    out["search_filtered"] = timed(lambda: c.search_runs(["1"], "metrics.auc > 0.9", max_results=1000), 20)
    out["resolve_alias"] = timed(lambda: c.get_model_version_by_alias("m", "production"), 200)
    print(json.dumps(out))
    sys.exit(0)

if "--raw" in sys.argv:
    import requests

    token = sys.argv[sys.argv.index("--raw") + 1]
    s = requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    api = uri + "/api/2.0/mlflow"
    exp = c.create_experiment(f"raw-{os.getpid()}-{now}")
    hist = c.create_run(exp).info.run_id
    for b in range(10):
        c.log_batch(hist, metrics=[Metric("h", float(k), now, b * 1000 + k) for k in range(1000)])
    for k in range(200):
        r = c.create_run(exp).info.run_id
        c.log_batch(r, metrics=[Metric("auc", 0.5 + (k % 50) / 100, now, 0)], params=[Param("lr", "0.01" if k % 2 else "0.1")])
    def get(path, **params):
        r = s.get(api + path, params=params)
        r.raise_for_status()
        return r
    def post(path, body):
        r = s.post(api + path, json=body)
        r.raise_for_status()
        return r
    run = c.create_run(exp).info.run_id
    step = iter(range(10**9))
    out["log_metric"] = timed(lambda: post("/runs/log-metric", {"run_id": run, "key": "l", "value": 0.5, "timestamp": now, "step": next(step)}), 300)
    body = {"run_id": run, "metrics": [{"key": "b", "value": float(k), "timestamp": now, "step": k} for k in range(1000)]}
    out["log_batch_1000"] = timed(lambda: post("/runs/log-batch", body), 30)
    out["history_10000"] = timed(lambda: get("/metrics/get-history", run_id=hist, metric_key="h", max_results=25000), 10)
    query = {"experiment_ids": [exp], "filter": "metrics.auc > 0.9 and params.lr = '0.01'", "max_results": 1000}
    out["search_filtered"] = timed(lambda: post("/runs/search", query), 20)
    print(json.dumps(out))
    sys.exit(0)

exp = c.create_experiment(f"bench-{os.getpid()}-{now}")
run = c.create_run(exp).info.run_id
# One metric point at a time.
i = iter(range(10**9))
out["log_metric"] = timed(lambda: c.log_metric(run, "loss", 0.5, now, next(i)), 300)
# A batch of 1,000 points.
batch = iter(range(10**9))


def one_batch():
    b = next(batch)
    c.log_batch(run, metrics=[Metric("batched", float(k), now, b * 1000 + k) for k in range(1000)])


out["log_batch_1000"] = timed(one_batch, 30)
# The history of 10,000 points of one key.
hist = c.create_run(exp).info.run_id
for b in range(10):
    c.log_batch(hist, metrics=[Metric("h", float(k), now, b * 1000 + k) for k in range(1000)])
out["history_10000"] = timed(lambda: c.get_metric_history(hist, "h"), 10)
assert len(c.get_metric_history(hist, "h")) == 10000
# A filtered search over 200 runs with params and metrics.
for k in range(200):
    r = c.create_run(exp).info.run_id
    c.log_batch(
        r,
        metrics=[Metric("auc", 0.5 + (k % 50) / 100, now, 0), Metric("acc", 0.7, now, 0)],
        params=[Param("lr", "0.01" if k % 2 else "0.1"), Param("depth", str(k % 7))],
    )
query = "metrics.auc > 0.9 and params.lr = '0.01'"
out["search_filtered"] = timed(lambda: c.search_runs([exp], query, max_results=1000), 20)
out["search_found"] = len(c.search_runs([exp], query, max_results=1000))
# Resolving NAME@ALIAS.
model_dir = tempfile.mkdtemp()
with open(os.path.join(model_dir, "MLmodel"), "w") as f:
    f.write("flavors: {}\n")
with open(os.path.join(model_dir, "model.pkl"), "wb") as f:
    f.write(os.urandom(1024))
c.log_artifacts(run, model_dir, "model")
name = f"bench-{os.getpid()}-{now}"
c.create_registered_model(name)
v = c.create_model_version(name, f"runs:/{run}/model", run)
c.set_registered_model_alias(name, "production", v.version)
out["resolve_alias"] = timed(lambda: c.get_model_version_by_alias(name, "production"), 200)
print(json.dumps(out))
