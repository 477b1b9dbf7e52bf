"""Validate an encoder-decoder export (a directory, `seq2seq`): each file against its half of the model, then
greedy decoding with the two files alone against transformers' ``generate``.

Each file gets validation's per-output checks (seeds, the export shape and the halved one); a check's output is
named after its file, ``decoder_model.onnx:logits``. Then two prompts of different lengths, left-padded into one
batch of 2, go through ``encoder_model.onnx`` once; ``decoder_model.onnx`` starts from the decoder start token with
decoder pasts of length 0 and is fed its own ``present.*.decoder.*`` back for every later token. Every step's logits
must be within tolerance of ``generate(do_sample=False)``'s and every token identical (`decode_check`).
"""

from __future__ import annotations

import os

import numpy as np

from . import seq2seq
from .decode_check import DEFAULT_NEW_TOKENS, PROMPT_LENGTHS, DecodeReport, StepCheck, greedy_decode, prompts, reference


def validate_directory(
    directory: str | os.PathLike,
    model=None,
    *,
    atol: float,
    rtol: float,
    seeds: tuple[int, ...],
    revision: str | None = None,
    trust_remote_code: bool = False,
    new_tokens: int = DEFAULT_NEW_TOKENS,
):
    """`validate` for an encoder-decoder export directory: a ValidationReport of both files and the decode."""
    import torch

    from .case_check import check_case
    from .validate import ValidationReport, load_reference, ort_session, resized_spec

    paths = seq2seq.part_paths(directory)
    from .export import read_sidecar

    task = ((read_sidecar(paths["decoder"]) or {}).get("options") or {}).get("task") or next(iter(seq2seq.TASKS))
    loaded, ref = load_reference(
        paths["decoder"], model, task=task, revision=revision, trust_remote_code=trust_remote_code
    )
    report = ValidationReport(str(directory), ref, atol, rtol, list(seeds))
    sessions = {}
    for part, path in paths.items():
        sessions[part] = ort_session(path)
        part_loaded = seq2seq.loaded_part(loaded, part)
        spec = seq2seq.example_spec(loaded.model, part)
        torch.manual_seed(0)
        for case, case_spec in (("export", spec), ("resized", resized_spec(spec))):
            for seed in seeds:
                for check in check_case(sessions[part], part_loaded, case_spec, seed, case, atol, rtol):
                    check.output = f"{path.name}:{check.output}"
                    report.checks.append(check)
    report.decode = decode_check(sessions["encoder"], sessions["decoder"], loaded, new_tokens, atol, rtol)
    return report


def decode_check(encoder, decoder, loaded, new_tokens: int = DEFAULT_NEW_TOKENS, atol=1e-4, rtol=1e-3):
    """Greedy-decode with the two sessions and compare with ``loaded.model.generate``."""
    from .errors import first_line

    config = loaded.model.config
    pad = config.pad_token_id if isinstance(config.pad_token_id, int) else 0
    start = config.decoder_start_token_id if isinstance(config.decoder_start_token_id, int) else pad
    eos = config.eos_token_id
    eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
    if seq2seq.is_audio(loaded.model):  # two random clips of mel frames: no padding, no mask
        shape = (len(PROMPT_LENGTHS), config.num_mel_bins, seq2seq.audio_frames(loaded.model))
        prompt = {"input_features": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        cross_mask = {}
    else:
        ids, mask = prompts(config.vocab_size, pad)
        prompt = {"input_ids": ids, "attention_mask": mask}
        cross_mask = {"encoder_attention_mask": mask}
    report = DecodeReport(new_tokens, list(PROMPT_LENGTHS) if cross_mask else [])
    want_tokens, want_logits = reference(loaded.model, prompt, new_tokens, pad, eos, start=start)
    report.reference_tokens = want_tokens.tolist()

    batch = len(PROMPT_LENGTHS)
    try:
        (hidden,) = encoder.run(["last_hidden_state"], prompt)
    except Exception as exc:  # ORT refusing the prompts is a failure to report
        report.steps.append(StepCheck(0, "last_hidden_state", False, error=f"ONNX Runtime failed: {first_line(exc)}"))
        return report
    first = np.full((batch, 1), start, dtype=np.int64)
    context = {"encoder_hidden_states": hidden, **cross_mask}
    return greedy_decode(
        report, decoder, first, lambda _step, _ids: context, (want_tokens, want_logits), pad, eos_ids, atol, rtol
    )
