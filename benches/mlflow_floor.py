"""A server that does nothing, for benches/mlflow_compare.sh: `{}` to every write, and to the
reads of benches/mlflow_client.py the answers it needs (a 10,000-point history, 20 runs, a
model version), serialized once up front. What is left of a call against it is the client's
own cost. Nagle is off, as a real server's would be.

    python benches/mlflow_floor.py PORT
"""

import http.server
import json
import socket
import sys

now = 1_796_000_000_000
run = {
    "info": {"run_id": "0" * 32, "run_uuid": "0" * 32, "experiment_id": "1", "run_name": "r", "user_id": "u",
             "status": "FINISHED", "start_time": now, "end_time": now, "artifact_uri": "mlflow-artifacts:/1/r",
             "lifecycle_stage": "active"},
    "data": {"metrics": [{"key": "auc", "value": 0.95, "timestamp": now, "step": 0}],
             "params": [{"key": "lr", "value": "0.01"}], "tags": []},
    "inputs": {},
}
canned = {
    "/api/2.0/mlflow/metrics/get-history": {
        "metrics": [{"key": "h", "value": float(k), "timestamp": now, "step": k} for k in range(10_000)]
    },
    "/api/2.0/mlflow/runs/search": {"runs": [run] * 20},
    "/api/2.0/mlflow/registered-models/alias": {
        "model_version": {"name": "m", "version": "1", "creation_timestamp": now, "last_updated_timestamp": now,
                          "current_stage": "None", "source": "mlflow-artifacts:/x", "run_id": "0" * 32,
                          "status": "READY", "aliases": ["production"]}
    },
}
answers = {path: json.dumps(v).encode() for path, v in canned.items()}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        body = answers.get(self.path.split("?")[0], b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
