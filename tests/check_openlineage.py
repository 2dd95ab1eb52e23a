"""Parses every OpenLineage event Sluice wrote (a JSON-lines file, argv[1]) into the models of
the openlineage-python client, round-trips it through the client's serializer, and checks
the run protocol: one START and one end per run id, every task's parent a DAG run of the
file, a task's inputs repeated in its end event. Prints a summary as JSON; exits 1 on the
first problem."""

import json
import sys

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    error_message_run,
    parent_run,
    processing_engine_run,
)
from openlineage.client.serde import Serde


def dataset(cls, d):
    facets = {}
    for name, f in (d.get("facets") or {}).items():
        if name == "version":
            facets[name] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=f["datasetVersion"])
        else:
            raise ValueError(f"unexpected dataset facet {name}")
    return cls(namespace=d["namespace"], name=d["name"], facets=facets)


def run_facets(d):
    out = {}
    for name, f in d.items():
        if name == "parent":
            out[name] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=f["run"]["runId"]),
                job=parent_run.Job(namespace=f["job"]["namespace"], name=f["job"]["name"]),
            )
        elif name == "errorMessage":
            out[name] = error_message_run.ErrorMessageRunFacet(
                message=f["message"], programmingLanguage=f["programmingLanguage"]
            )
        elif name == "processing_engine":
            out[name] = processing_engine_run.ProcessingEngineRunFacet(version=f["version"], name=f["name"])
        else:
            raise ValueError(f"unexpected run facet {name}")
        for key in ("_producer", "_schemaURL"):
            if not f.get(key, "").startswith("http"):
                raise ValueError(f"facet {name} lacks {key}")
    return out


def parse(raw):
    return RunEvent(
        eventType=RunState(raw["eventType"]),
        eventTime=raw["eventTime"],
        producer=raw["producer"],
        run=Run(runId=raw["run"]["runId"], facets=run_facets(raw["run"].get("facets", {}))),
        job=Job(namespace=raw["job"]["namespace"], name=raw["job"]["name"]),
        inputs=[dataset(InputDataset, d) for d in raw.get("inputs", [])],
        outputs=[dataset(OutputDataset, d) for d in raw.get("outputs", [])],
    )


def main():
    events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    starts, ends, parents, dag_runs, inputs = {}, {}, {}, set(), {}
    for raw in events:
        event = parse(raw)
        if not raw["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json"):
            raise ValueError(f"schemaURL {raw['schemaURL']}")
        back = json.loads(Serde.to_json(event))
        for key in ("eventType", "eventTime", "producer"):
            assert back[key] == raw[key], (key, back[key], raw[key])
        assert back["run"]["runId"] == raw["run"]["runId"]
        assert [d["name"] for d in back.get("inputs", [])] == [d["name"] for d in raw["inputs"]]
        rid = raw["run"]["runId"]
        if raw["eventType"] == "START":
            assert rid not in starts, f"two STARTs for {rid}"
            starts[rid] = raw
            inputs[rid] = raw["inputs"]
        else:
            assert rid in starts, f"an end before its START for {rid}"
            assert rid not in ends, f"two ends for {rid}"
            ends[rid] = raw
            if "parent" in raw["run"]["facets"]:
                assert raw["inputs"] == inputs[rid], "a task's inputs are repeated at its end"
        parent = raw["run"]["facets"].get("parent")
        if parent:
            parents[rid] = parent["run"]["runId"]
        else:
            dag_runs.add(rid)
    assert starts.keys() == ends.keys(), "every run that started ended"
    for rid, parent in parents.items():
        assert parent in dag_runs, f"task {rid} names a parent {parent} that is not a DAG run here"
    summary = {
        "events": len(events),
        "dag_runs": len(dag_runs),
        "tasks": len(parents),
        "states": sorted({e["eventType"] for e in events}),
        "jobs": sorted({e["job"]["name"] for e in events}),
        "input_names": sorted({d["name"] for e in events for d in e["inputs"]}),
        "output_versions": sorted({d["facets"]["version"]["datasetVersion"] for e in events for d in e["outputs"]}),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print(f"check_openlineage: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
