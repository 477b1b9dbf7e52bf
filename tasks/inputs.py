"""Example inputs of a model, as an input spec: a small JSON-able value that every later stage keys on."""

from __future__ import annotations

from prefect import task

from modelexport.source import ModelSource

from .policy import CONTENT, computing


@task(name="inputs", cache_policy=CONTENT, persist_result=True)
def derive_inputs(
    source: ModelSource, task_name: str | None = None, input_spec: dict | None = None, trust_remote_code: bool = False
) -> dict:
    """The user's spec if given (checked against the model's config), else the one the model's config and forward
    signature call for (read from the model built without its weights)."""
    from modelexport import seq2seq, with_past
    from modelexport.inputs import check_spec_fits, parse_input_spec, resolve_spec
    from modelexport.loading import load, load_config

    if input_spec is not None:
        spec = parse_input_spec(input_spec)
        with computing():
            check_spec_fits(spec, load_config(source, trust_remote_code))  # the config only, not the weights
        return spec.model_dump(mode="json")
    with computing():  # building a transformers model patches torch's init functions for a while
        loaded = load(source, task=task_name, trust_remote_code=trust_remote_code, weights=False)
    if seq2seq.is_seq2seq(task_name):  # each file's inputs come from the config at export; the encoder's here
        return seq2seq.example_spec(loaded.model, "encoder").model_dump(mode="json")
    if with_past.is_with_past(task_name):  # the cache's inputs too: past_key_values.{i}.key / .value
        return with_past.example_spec(loaded.model, loaded.config, task_name).model_dump(mode="json")
    return resolve_spec(loaded.model, loaded.config).model_dump(mode="json")
