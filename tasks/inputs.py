"""Example inputs of a model, as an input spec: a small JSON-able value that every later stage keys on."""

from __future__ import annotations

from prefect import task

from modelexport.source import ModelSource

from .policy import CONTENT, computing


@task(name="inputs", cache_policy=CONTENT, persist_result=True)
def derive_inputs(source: ModelSource, task_name: str | None = None, input_spec: dict | None = None,
                  trust_remote_code: bool = False) -> dict:
    """The user's spec if given, else the one the model's config and forward signature call for."""
    from modelexport.errors import BadInputError
    from modelexport.inputs import check_spec_fits, parse_input_spec, spec_from_config
    from modelexport.loading import load, load_config

    if input_spec is not None:
        spec = parse_input_spec(input_spec)
        with computing():
            check_spec_fits(spec, load_config(source, trust_remote_code))  # the config only, not the weights
        return spec.model_dump(mode="json")
    with computing():
        loaded = load(source, task=task_name, trust_remote_code=trust_remote_code)
    if loaded.config is None:
        raise BadInputError(f"{source.ref} is a plain torch module: give its input_spec")
    return spec_from_config(loaded.model, loaded.config).model_dump(mode="json")
