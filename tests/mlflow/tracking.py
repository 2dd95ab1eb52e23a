import os, sys, mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
mlflow.set_tracking_uri(os.environ["URI"])
exp = mlflow.set_experiment("churn-exp")
with mlflow.start_run(run_name="first") as run:
    mlflow.log_param("lr", "0.01")
    mlflow.log_params({"depth": 3, "model": "mlp"})
    for i in range(5):
        mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
    mlflow.log_metrics({"auc": 0.93, "acc": 0.88})
    mlflow.set_tag("team", "fraud")
    rid = run.info.run_id
print("RUN", rid)
c = MlflowClient()
r = c.get_run(rid)
print("STATUS", r.info.status, r.data.metrics["loss"], r.data.params["lr"], r.data.tags["team"])
hist = c.get_metric_history(rid, "loss")
print("HIST", [round(m.value, 3) for m in hist], [m.step for m in hist])
r2 = c.create_run(exp.experiment_id, run_name="second")
c.log_batch(r2.info.run_id, metrics=[mlflow.entities.Metric("auc", 0.7, 0, 0)], params=[mlflow.entities.Param("lr", "0.1")])
c.set_terminated(r2.info.run_id)
found = c.search_runs([exp.experiment_id], "metrics.auc > 0.9 and params.lr = '0.01'")
print("FOUND", [x.info.run_id for x in found])
ordered = c.search_runs([exp.experiment_id], "", order_by=["metrics.auc ASC"])
print("ORDER", [x.info.run_name for x in ordered])
try:
    c.log_param(rid, "lr", "0.5")
except MlflowException as e:
    print("PARAM", e.error_code)
try:
    c.get_run("0" * 32)
except MlflowException as e:
    print("MISSING", e.error_code)
try:
    c.search_runs([exp.experiment_id], "metrics.auc >")
except MlflowException as e:
    print("BADFILTER", e.error_code, "column" in str(e))
print("EXP", c.get_experiment_by_name("nope"))
