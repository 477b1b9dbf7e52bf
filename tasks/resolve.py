"""Resolve a model reference: download a hub snapshot (retried on transient faults) or hash a local folder."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelexport.source import ModelSource, resolve

from .policy import RETRY


@task(name="resolve", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def resolve_model(ref: str, revision: str | None = None) -> ModelSource:
    """Never cached: resolving is what tells us whether the model changed (a moved branch, edited weights)."""
    return resolve(ref, revision=revision)
