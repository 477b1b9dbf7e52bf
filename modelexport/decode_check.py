"""Validate a with-past export by generating: greedy decoding under ONNX Runtime against transformers' own.

Two prompts of different lengths, left-padded into one batch of 2, are decoded for `new_tokens` steps with the
ONNX file alone: the first run (prefill) takes the whole prompt and pasts of length 0, every later run one token
and the ``present.*`` of the run before. transformers' ``generate(do_sample=False)`` decodes the same prompts
with a plain greedy configuration (no repetition penalty or other processors a saved ``generation_config`` may
carry: the raw logits are compared). Every step's last-position logits must be within tolerance of
``generate``'s and every token identical; the first mismatching token ends the check (later steps would compare
different prefixes). The result is data (:class:`DecodeReport`); validation decides what it means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .kv_cache import PAST

DEFAULT_NEW_TOKENS = 16
PROMPT_LENGTHS = (7, 4)


@dataclass
class StepCheck:
    """One decode step of one output (``logits`` or ``tokens``)."""

    step: int
    output: str
    passed: bool
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    error: str | None = None


@dataclass
class DecodeReport:
    new_tokens: int
    prompt_lengths: list[int]
    steps: list[StepCheck] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)  # the ONNX file's new tokens per prompt
    reference_tokens: list[list[int]] = field(default_factory=list)  # generate's

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.passed for s in self.steps)

    def summary(self) -> str:
        bad = next((s for s in self.steps if not s.passed), None)
        if bad is None:
            what = (
                f"{len(self.prompt_lengths)} prompts (lengths {self.prompt_lengths}, left-padded)"
                if self.prompt_lengths
                else f"{len(self.reference_tokens)} audio inputs"
            )
            return f"greedy decoding of {what} matched generate for {len(self.steps) // 2} steps"
        if bad.error:
            return f"decode step {bad.step}, {bad.output}: {bad.error}"
        off = f"off by {bad.max_abs_diff:.3g} absolute, {bad.max_rel_diff:.3g} relative"
        return f"decode step {bad.step}, {bad.output}: {off}"

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed, "summary": self.summary()}


def prompts(vocab: int, pad: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ids and mask of two random prompts of `PROMPT_LENGTHS`."""
    rng = np.random.default_rng(seed)
    width = max(PROMPT_LENGTHS)
    ids = np.full((len(PROMPT_LENGTHS), width), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(PROMPT_LENGTHS):
        ids[row, width - length :] = rng.integers(0, vocab, length)
        mask[row, width - length :] = 1
    return ids, mask


def reference(model, inputs: dict[str, np.ndarray], new_tokens: int, pad: int, eos, start: int | None = None):
    """generate's new tokens ``[batch, steps]`` and per-step logits ``[steps, batch, vocab]`` for the prompt
    `inputs` (``input_ids`` and ``attention_mask``; a speech encoder's ``input_features``); `start`: an
    encoder-decoder's decoder start token (its sequences hold it, not the prompt). transformers' own
    ``GenerationMixin.generate``: Whisper's override adds language detection and timestamps."""
    import torch
    from transformers import GenerationConfig, GenerationMixin

    config = GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=0, do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos
    )
    if start is not None:
        config.decoder_start_token_id = start
    config.update(use_cache=True, output_logits=True, return_dict_in_generate=True)
    # generate fills a given config's unset fields from the model's own (BART's forced_eos_token_id would force
    # the last token): for the call, the plain greedy configuration is the model's
    saved, model.generation_config = model.generation_config, config
    try:
        with torch.inference_mode():
            tensors = {name: torch.from_numpy(array) for name, array in inputs.items()}
            out = GenerationMixin.generate(model, **tensors, generation_config=config)
    finally:
        model.generation_config = saved
    tokens = out.sequences[:, inputs["input_ids"].shape[1] if start is None else 1 :].numpy()
    logits = np.stack([step.float().numpy() for step in out.logits])
    return tokens, logits


def greedy_decode(report, session, first_ids, context, want, pad: int, eos_ids: set, atol: float, rtol: float):
    """Greedy-decode with `session` from `first_ids`, pasts empty at the first step and each step's presents fed
    back, comparing every step's last logits and tokens with generate's (`want`: tokens, logits) into `report`.
    `context(step, step_ids)` gives the step's other inputs (masks, positions, the encoder's output)."""
    from .case_check import difference
    from .errors import first_line

    want_tokens, want_logits = want
    batch = first_ids.shape[0]
    pasts = {
        i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=np.float32)
        for i in session.get_inputs()
        if PAST.match(i.name)
    }
    outputs = [o.name for o in session.get_outputs()]
    step_ids, unfinished, got = first_ids, np.ones(batch, dtype=bool), []
    for step in range(want_tokens.shape[1]):
        try:
            result = dict(zip(outputs, session.run(None, {"input_ids": step_ids, **context(step, step_ids), **pasts})))
        except Exception as exc:  # ORT refusing an empty past or a new length is what this check is for
            report.steps.append(
                StepCheck(step, "(all outputs)", False, error=f"ONNX Runtime failed: {first_line(exc)}")
            )
            return report
        logits = result["logits"][:, -1, :]
        abs_diff, rel_diff, ok = difference(want_logits[step], logits, atol, rtol)
        report.steps.append(StepCheck(step, "logits", ok, abs_diff, rel_diff))
        token = np.where(unfinished, logits.argmax(-1), pad)
        got.append(token)
        same = bool((token == want_tokens[:, step]).all())
        error = None if same else f"token ids {token.tolist()} instead of generate's {want_tokens[:, step].tolist()}"
        report.steps.append(StepCheck(step, "tokens", same, error=error))
        if not same:
            break
        unfinished &= ~np.isin(token, list(eos_ids))
        pasts = {n: result["present." + n.removeprefix("past_key_values.")] for n in pasts}
        step_ids = token[:, None].astype(np.int64)
    report.tokens = np.stack(got, axis=1).tolist() if got else []
    return report


def decode_check(session, loaded, new_tokens: int = DEFAULT_NEW_TOKENS, atol: float = 1e-4, rtol: float = 1e-3):
    """Greedy-decode with `session` (a with-past export) and compare with ``loaded.model.generate``."""

    config = loaded.model.config
    text = config.get_text_config(decoder=True)
    pad = text.pad_token_id if isinstance(getattr(text, "pad_token_id", None), int) else 0
    eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
    ids, mask = prompts(text.vocab_size, pad)
    report = DecodeReport(new_tokens, list(PROMPT_LENGTHS))
    want_tokens, want_logits = reference(loaded.model, {"input_ids": ids, "attention_mask": mask}, new_tokens, pad, eos)
    report.reference_tokens = want_tokens.tolist()

    names = {i.name for i in session.get_inputs()}

    def context(step: int, step_ids) -> dict:
        """The mask over the prompt and the tokens so far, and the new tokens' positions (left padding skipped)."""
        grown = np.concatenate([mask, np.ones((mask.shape[0], step), dtype=np.int64)], axis=1)
        feeds = {"attention_mask": grown} if "attention_mask" in names else {}
        if "position_ids" in names:
            positions = np.where(grown == 0, 1, np.cumsum(grown, axis=1) - 1)
            feeds["position_ids"] = positions[:, -step_ids.shape[1] :]
        return feeds

    return greedy_decode(report, session, ids, context, (want_tokens, want_logits), pad, eos_ids, atol, rtol)
