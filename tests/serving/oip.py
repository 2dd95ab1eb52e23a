"""Triton's own HTTP client (tritonclient[http]) against Sluice's Open Inference Protocol.

usage: oip.py ADDR TOKEN MODEL EXPECTED_JSON

EXPECTED_JSON: {"rows": [[...], ...], "probabilities": [[...], ...], "labels": [...]} as
Sluice's own predict endpoint answered for the same rows. Prints one line per check; exits 1
on the first that fails.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

addr, token, model, expected = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
_auth = {"Authorization": f"Bearer {token}"}


def auth():
    # A fresh dict each call: the client adds its Inference-Header-Content-Length to the one
    # it is given.
    return dict(_auth)

client = httpclient.InferenceServerClient(url=addr)


def check(what, ok, detail=""):
    print(("OK   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"), flush=True)
    if not ok:
        sys.exit(1)


check("server live", client.is_server_live())
check("server ready", client.is_server_ready())
check("model ready", client.is_model_ready(model, headers=auth()))
meta = client.get_model_metadata(model, headers=auth())
check("metadata names the input", meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"][1] == 3, meta)
check("metadata names the outputs", [o["name"] for o in meta["outputs"]] == ["probabilities", "label"], meta)

rows = np.array(expected["rows"], dtype=np.float32)
want = np.array(expected["probabilities"], dtype=np.float32)

for binary in (True, False):
    inp = httpclient.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer(model, [inp], outputs=outs, headers=auth(), request_id="oip-1")
    got = result.as_numpy("probabilities")
    check(f"infer ({'binary' if binary else 'JSON'} tensors) probabilities", got.shape == want.shape and np.allclose(got, want, atol=1e-6), got)
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("label").tolist()]
    check(f"infer ({'binary' if binary else 'JSON'} tensors) labels", labels == expected["labels"], labels)

# One tensor per feature, FP64, by version.
inputs = []
for j, name in enumerate(["tenure", "spend", "calls"]):
    t = httpclient.InferInput(name, [rows.shape[0], 1], "FP64")
    t.set_data_from_numpy(rows[:, j : j + 1].astype(np.float64), binary_data=False)
    inputs.append(t)
result = client.infer(model, inputs, model_version="1", headers=auth())
check("infer by feature, version 1", np.allclose(result.as_numpy("probabilities"), want, atol=1e-6))

# Bad input: a NaN, a wrong shape, no token.
bad = rows.copy()
bad[1, 2] = np.nan
inp = httpclient.InferInput("input", list(bad.shape), "FP32")
inp.set_data_from_numpy(bad)
try:
    client.infer(model, [inp], headers=auth())
    check("a NaN is refused", False)
except InferenceServerException as e:
    check("a NaN is refused, naming the field", "inputs[1].calls" in str(e) and "NaN" in str(e), str(e))
inp = httpclient.InferInput("input", [rows.shape[0], 2], "FP32")
inp.set_data_from_numpy(rows[:, :2].copy())
try:
    client.infer(model, [inp], headers=auth())
    check("a wrong shape is refused", False)
except InferenceServerException as e:
    check("a wrong shape is refused", "takes [N, 3]" in str(e), str(e))
try:
    client.get_model_metadata(model)
    check("no token is refused", False)
except InferenceServerException as e:
    check("no token is refused", "401" in str(e) or "token" in str(e).lower(), str(e))
print("ALL OK")
