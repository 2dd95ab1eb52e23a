# A pipeline step probing what its attempt token may do: MLflow calls on its own run, yes;
# another step's run, Sluice's own API, alias moves and the registry's files, no.
import json
import os
import sys

import requests

uri = os.environ["MLFLOW_TRACKING_URI"]
h = {"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]}
own = os.environ["MLFLOW_RUN_ID"]
other = sys.argv[1]
out = {}


def post(path, body):
    return requests.post(uri + path, json=body, headers=h).status_code


out["own_metric"] = post("/api/2.0/mlflow/runs/log-metric", {"run_id": own, "key": "k", "value": 1, "timestamp": 1})
out["other_metric"] = post("/api/2.0/mlflow/runs/log-metric", {"run_id": other, "key": "k", "value": 1, "timestamp": 1})
out["sluice_api"] = requests.get(uri + "/api/v1/runs", headers=h).status_code
out["alias"] = post("/api/2.0/mlflow/registered-models/alias", {"name": "m", "alias": "production", "version": "1"})
out["registry_upload"] = requests.put(uri + "/api/2.0/mlflow-artifacts/artifacts/registry/m/1/model.pkl", data=b"x", headers=h).status_code
json.dump(out, open(os.environ["PROBE_FILE"], "w"))
