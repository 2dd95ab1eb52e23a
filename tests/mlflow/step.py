# A pipeline step that uses MLflow's fluent API as training code does: the engine gave it
# MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN and MLFLOW_RUN_ID, so start_run() attaches to
# the step's own tracking run.
import os
import pathlib

import mlflow

given = os.environ["MLFLOW_RUN_ID"]  # start_run() takes it out of the environment
with mlflow.start_run() as run:
    assert run.info.run_id == given
    mlflow.log_param("seed", 7)
    mlflow.log_metric("auc", 0.93)
    mlflow.log_metric("loss", 0.5, step=1)
    mlflow.log_metric("loss", 0.25, step=2)
# The test checks that the token stops standing once the step is over.
pathlib.Path(os.environ["TOKEN_FILE"]).write_text(os.environ["MLFLOW_TRACKING_TOKEN"])
