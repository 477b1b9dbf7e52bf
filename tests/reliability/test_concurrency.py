"""Two processes running the same model's pipeline into the same output folder and cache at once both succeed,
and what they leave is complete and consistent (atomic renames; cache records keyed by content)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_two_processes_running_the_same_model_into_the_same_folder(model_dirs, tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COLUMNS": "200",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "run",
        str(model_dirs["tiny-resnet"]),
        "--output-dir",
        str(out),
        "--name",
        "resnet",
        "--no-profile",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o + e for o, e in results)
    # MLflow's logs and registry notices are quiet unless --debug ("ok     resnet" is each one's line; the second
    # may find it cached, and may log Prefect's server losing the race to migrate the new PREFECT_HOME's database).
    chatter = [
        line
        for _, err in results
        for line in err.splitlines()
        if "mlflow" in line.lower() or "registered model" in line.lower() or "created version" in line.lower()
    ]
    assert chatter == [], chatter
    assert all(err.count("ok     resnet") == 1 for _, err in results), [err for _, err in results]

    import onnx

    folder = out / "resnet"
    model = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    sidecar = json.loads((folder / "model.hierarchy.json").read_text())
    assert sidecar["stats"]["total_nodes"] == len(model.graph.node)
    assert sorted(p.name for p in folder.iterdir()) == [  # no staging leftovers, nothing partial
        "model.graphml",
        "model.hierarchy.json",
        "model.onnx",
        "report.json",
        "report.md",
        "validation.json",
    ]
    assert json.loads((folder / "validation.json").read_text())["passed"] is True
    for record in (out / ".cache").iterdir():  # every cache record complete
        if record.is_file():
            json.loads(record.read_text())
    assert not list((out / ".cache" / "locks").iterdir())  # the model's lock (tasks/locks.py) was released

    # Both wrote the same export: a third export of the same model gives the same bytes.
    from modelexport.export import export_model

    (tmp_path / "again").mkdir()
    again = export_model(str(model_dirs["tiny-resnet"]), tmp_path / "again" / "model.onnx")
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "model.onnx", again.onnx_path)]
    assert digest[0] == digest[1]
