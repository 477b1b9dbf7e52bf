"""File digests remembered by stat: the same digest as reading the file, and never a stale one."""

from __future__ import annotations

import hashlib
import os

import pytest

from modelexport import digests
from modelexport.source import hash_directory


@pytest.fixture
def weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELEXPORT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(os.urandom(digests.REMEMBER_FROM_BYTES + 10))
    return path


def remembered(tmp_path) -> list:
    folder = tmp_path / "cache" / "digests"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_digest_is_the_files_sha256_and_is_remembered(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "RACY_SECONDS", 0.0)
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert digests.file_digest(weights) == expected
    assert len(remembered(tmp_path)) == 1
    assert digests.file_digest(weights) == expected


def test_a_changed_file_is_hashed_again(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "RACY_SECONDS", 0.0)
    before = hash_directory(weights.parent)
    data = bytearray(weights.read_bytes())
    data[5] ^= 0xFF  # same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))  # even with an old mtime: the ctime moved
    assert digests.file_digest(weights) == hashlib.sha256(bytes(data)).hexdigest()
    assert hash_directory(weights.parent) != before


def test_a_file_changed_moments_ago_is_not_remembered(weights, tmp_path):
    digests.file_digest(weights)
    assert remembered(tmp_path) == []


def test_a_corrupt_entry_is_ignored(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "RACY_SECONDS", 0.0)
    digests.file_digest(weights)
    (entry,) = remembered(tmp_path)
    entry.write_text("not a digest")
    assert digests.file_digest(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_an_empty_cache_dir_turns_the_memory_off(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "RACY_SECONDS", 0.0)
    monkeypatch.setenv("MODELEXPORT_CACHE_DIR", "")
    digests.file_digest(weights)
    assert remembered(tmp_path) == []
