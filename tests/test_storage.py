"""modelexport.storage on a real S3-compatible server (moto's, on 127.0.0.1) and on local folders: commits that
leave nothing half-written, fetches that download once, stamps that notice a rewritten object, and clear refusals
of stores that cannot be written."""

from __future__ import annotations

import os

import pytest

from modelexport import storage
from modelexport.errors import BadInputError
from tests.conftest import run_cli
from tests.servers import keys, new_bucket


def test_local_locations_are_used_in_place(tmp_path):
    target = tmp_path / "a" / "model.onnx"
    assert storage.local_path(str(target)) == target
    assert storage.local_path(f"file://{target}") == target
    assert storage.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    target.parent.mkdir()
    target.write_bytes(b"x")
    storage.commit([str(target)])  # nothing to upload
    assert storage.fetch(str(target)) == target
    assert storage.stamps([str(target), str(tmp_path / "missing")])[str(tmp_path / "missing")] is None


def test_a_stored_file_is_committed_fetched_once_and_restamped_when_rewritten(s3, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.SCRATCH_ENV, str(tmp_path / "scratch"))
    folder = f"{new_bucket(s3)}/fleet/m"
    location = storage.join(folder, "model.onnx")
    assert storage.is_remote(location) and storage.join(folder, "x") == folder + "/x"
    local = storage.local_path(location)
    assert local.is_relative_to(tmp_path / "scratch")
    local.parent.mkdir(parents=True)
    local.write_bytes(b"one")
    storage.commit([location])
    assert keys(folder) == ["model.onnx"]
    stamp = storage.stamps([location])[location]
    assert stamp[0] == 3

    # Another worker (another scratch) downloads it once; a later fetch reuses the copy.
    monkeypatch.setenv(storage.SCRATCH_ENV, str(tmp_path / "other"))
    fetched = storage.fetch(folder)
    assert (fetched / "model.onnx").read_bytes() == b"one"
    before = (fetched / "model.onnx").stat().st_mtime_ns
    assert storage.fetch(folder) == fetched and (fetched / "model.onnx").stat().st_mtime_ns == before

    # Rewritten in the store (same size): the stamp changes and the next fetch brings the new content.
    monkeypatch.setenv(storage.SCRATCH_ENV, str(tmp_path / "scratch"))
    local.write_bytes(b"two")
    os.utime(local, ns=(before + 5 * 10**9, before + 5 * 10**9))
    storage.commit([location])
    assert storage.stamps([location])[location] != stamp
    monkeypatch.setenv(storage.SCRATCH_ENV, str(tmp_path / "other"))
    os.utime(fetched / "model.onnx", ns=(before - 10 * 10**9, before - 10 * 10**9))  # older than the new object
    assert (storage.fetch(location)).read_bytes() == b"two"
    assert not storage.fetch(storage.join(folder, "nothing-here")).exists()  # nothing stored: nothing fetched


def test_a_store_that_cannot_be_written_is_refused_before_anything_runs(s3, tmp_path, model_dirs):
    with pytest.raises(BadInputError, match="--output-dir s3://no-such-bucket-here/x: cannot write there"):
        storage.check_writable("s3://no-such-bucket-here/x", "--output-dir")
    for out, message in (
        ("s3://no-such-bucket-here/x", "cannot write there (no such bucket or folder)"),
        ("nosuchproto://bucket/x", "nosuchproto"),
        ("s3://AKIAEXAMPLE:s3cr3t@bucket/x", "never in the URL"),
    ):
        done = run_cli("run", str(model_dirs["tiny-bert"]), "--output-dir", out, "--no-tracking", cwd=tmp_path)
        assert done.returncode == 2, (out, done.stderr[-2000:])
        (line,) = done.stderr.strip().splitlines()
        assert message in line and "s3cr3t" not in line, line
    assert not (tmp_path / ".modelexport").exists()


def test_spreading_over_workers_needs_a_prefect_server(tmp_path, model_dirs):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"name: f\nmodels:\n  - id: {model_dirs['tiny-bert']}\n", encoding="utf-8")
    done = run_cli("run-fleet", str(fleet), "--spread-over", "export-model/single-model", cwd=tmp_path)
    assert done.returncode == 2 and "set PREFECT_API_URL" in done.stderr.strip().splitlines()[-1], done.stderr
