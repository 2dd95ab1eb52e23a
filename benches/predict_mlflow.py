"""MLflow's side of benches/predict_compare.sh: writes the table (30 features, the rule of
benches/predict.rs's generator), trains scikit-learn's MLPClassifier (32, 16) on it with
standardization (what Sluice's MLP does), and saves it as an MLflow model.

usage: predict_mlflow.py TABLE_CSV MODEL_DIR"""
import sys

import numpy as np
import mlflow.sklearn
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

table, model_dir = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(5)
x = rng.random((5000, 30)) * 10
y = ((x[:, 0] + x[:, 1] - x[:, 2] > 10) | (x[:, 3] * x[:, 4] > 60)).astype(int)
with open(table, "w") as f:
    f.write(",".join(f"f{i}" for i in range(30)) + ",label\n")
    for row, label in zip(x, y):
        f.write(",".join(f"{v:.3f}" for v in row) + f",{label}\n")
model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=200, random_state=1))
model.fit(x, y)
mlflow.sklearn.save_model(
    model, model_dir, skops_trusted_types=["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]
)
print(f"scikit-learn MLP accuracy on its training rows: {model.score(x, y):.3f}")
