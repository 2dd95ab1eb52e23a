# MLflow's registry calls against Sluice: log a model's files to a run, register them,
# point an alias at the version and read `models:/churn@production` back.
import os
import pathlib
import sys
import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

mlflow.set_tracking_uri(os.environ["URI"])
mlflow.set_experiment("registry-demo")
work = pathlib.Path(tempfile.mkdtemp())
model = work / "model"
model.mkdir()
(model / "MLmodel").write_text(
    "flavors:\n  python_function: {loader_module: x}\n"
    "signature:\n  inputs: '[{\"name\": \"age\", \"type\": \"long\"}, {\"name\": \"income\", \"type\": \"double\"}]'\n"
)
(model / "model.pkl").write_bytes(b"\x80\x04weights-" + os.urandom(64))
(model / "empty.txt").write_bytes(b"")

versions = []
for auc in (0.91, 0.95):
    with mlflow.start_run() as run:
        mlflow.log_metric("auc", auc)
        mlflow.log_param("lr", "0.01")
        mlflow.log_artifacts(str(model), artifact_path="model")
        mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", "churn")
        versions.append(mv.version)
print("VERSIONS", versions)
c = MlflowClient()
print("LISTED", sorted(f.path for f in c.list_artifacts(run.info.run_id, "model")))
c.set_registered_model_alias("churn", "production", versions[0])
c.set_registered_model_alias("churn", "production", versions[1])
mv = c.get_model_version_by_alias("churn", "production")
print("ALIAS", mv.version, mv.run_id == run.info.run_id, mv.status)
got = pathlib.Path(mlflow.artifacts.download_artifacts("models:/churn@production", dst_path=str(work / "got")))
print("SAME", (got / "model.pkl").read_bytes() == (model / "model.pkl").read_bytes(), sorted(p.name for p in got.iterdir()))
print("MODELS", [m.name for m in c.search_registered_models()])
print("SEARCH", [v.version for v in c.search_model_versions("name='churn'")])
rm = c.get_registered_model("churn")
print("RM", rm.name, rm.aliases)
try:
    c.set_registered_model_alias("churn", "production", "9")
except MlflowException as e:
    print("NOVERSION", e.error_code)
try:
    c.get_model_version_by_alias("churn", "nope")
except MlflowException as e:
    print("NOALIAS", e.error_code)
try:
    c.create_registered_model("churn")
except MlflowException as e:
    print("EXISTS", e.error_code)
try:
    c.create_model_version("churn", "runs:/%s/nothing-here" % run.info.run_id, run.info.run_id)
except MlflowException as e:
    print("NOFILES", e.error_code)
c.set_registered_model_tag("churn", "team", "risk")
c.set_registered_model_tag("churn", "gone", "soon")
c.delete_registered_model_tag("churn", "gone")
c.set_model_version_tag("churn", versions[1], "validated", "yes")
c.set_model_version_tag("churn", versions[1], "gone", "soon")
c.delete_model_version_tag("churn", versions[1], "gone")
print("TAGS", sorted(c.get_registered_model("churn").tags.items()), sorted(c.get_model_version("churn", versions[1]).tags.items()))
print("RUNID", run.info.run_id)
