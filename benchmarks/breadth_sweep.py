"""Breadth sweep: a tiny random model of every transformers model type its config class can build, exported with
the default strategy and validated, one process, a time limit per model. Not a test: many configs do not shrink
to consistent tiny sizes (those are `unbuilt` or `bad-input`, the model failing on its own inputs).

    .venv/bin/python -m benchmarks.breadth_sweep OUT [--limit 40] [TYPE ...]

One JSON line per model type goes to OUT/sweep.jsonl (type, class, status, strategy, coverage, reason,
seconds); types already there are skipped, so a run can be resumed. The limit is an alarm: it interrupts Python,
not a long C++ call.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import time
from pathlib import Path

SIZES = dict(
    hidden_size=32, d_model=32, n_embd=32, embed_dim=32, dim=32, embedding_size=32, n_embed=32,
    num_hidden_layers=2, n_layer=2, num_layers=2, encoder_layers=2, decoder_layers=2, n_layers=2,
    num_attention_heads=2, n_head=2, encoder_attention_heads=2, decoder_attention_heads=2, n_heads=2,
    intermediate_size=64, ffn_dim=64, encoder_ffn_dim=64, decoder_ffn_dim=64, d_ff=64, n_inner=64, hidden_dim=64,
    head_dim=16, d_kv=16, num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
    moe_intermediate_size=16, image_size=32, patch_size=8, max_position_embeddings=512,
)  # fmt: skip


def shrink(config_class):
    """The config class with every size it has that is larger than ours set to ours, nested configs too."""
    base = config_class()
    values = base.to_dict()
    sized = {k: v for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool)}
    kwargs = {k: v for k, v in SIZES.items() if k in sized and sized[k] > v}
    if values.get("num_key_value_heads") is not None:
        kwargs["num_key_value_heads"] = 2
    if values.get("layer_types") is not None:
        kwargs["layer_types"] = list(values["layer_types"])[: kwargs.get("num_hidden_layers", 2)]
    vocab = values.get("vocab_size")
    if isinstance(vocab, int) and vocab > 96:
        ids = [v for k, v in values.items() if k.endswith("_token_id") and isinstance(v, int)]
        kwargs["vocab_size"] = max([96] + [i + 1 for i in ids])
    for name in getattr(base, "sub_configs", None) or {}:
        nested = getattr(base, name, None)
        if nested is not None and hasattr(nested, "to_dict"):
            try:
                kwargs[name] = shrink(type(nested)).to_dict()
            except Exception:  # noqa: BLE001  the nested config keeps its defaults
                pass
    return config_class(**kwargs)


class Timeout(Exception):
    pass


def _alarm(*_):
    raise Timeout


def sweep_one(model_type: str, config_class, out: Path) -> dict:
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from modelexport.errors import BadInputError, one_line
    from modelexport.export import export_model
    from modelexport.validate import validate

    class_name = MODEL_MAPPING_NAMES.get(model_type)
    class_name = class_name[0] if isinstance(class_name, (list, tuple)) else class_name
    record = {"type": model_type, "class": class_name}
    if not class_name or not hasattr(transformers, class_name):
        return record | {"status": "skip: no base model class"}
    try:
        torch.manual_seed(0)
        path = out / "models" / model_type
        getattr(transformers, class_name)(shrink(config_class)).save_pretrained(path)
    except Timeout:
        raise
    except Exception as exc:  # noqa: BLE001  the config does not shrink consistently
        return record | {"status": "unbuilt", "reason": one_line(exc)[:300]}
    try:
        result = export_model(str(path), out / "onnx" / f"{model_type}.onnx")
        report = validate(result.onnx_path)
    except BadInputError as exc:
        return record | {"status": "bad-input", "reason": str(exc)[:600]}
    except Timeout:
        raise
    except Exception as exc:  # noqa: BLE001  every strategy failed: the one-line reason is the finding
        return record | {"status": "fail", "reason": one_line(exc)[:1500]}
    record |= {"strategy": result.strategy, "coverage": result.stats.coverage}
    return record | ({"status": "pass"} if report.passed else {"status": "fail-validate", "reason": report.summary()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=40, help="seconds per model type")
    parser.add_argument("types", nargs="*", help="model types (default: all)")
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import CONFIG_MAPPING

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    signal.signal(signal.SIGALRM, _alarm)
    (args.out / "onnx").mkdir(parents=True, exist_ok=True)
    log = args.out / "sweep.jsonl"
    done = {json.loads(line)["type"] for line in log.read_text().splitlines()} if log.exists() else set()
    with log.open("a") as sink:
        for model_type, config_class in sorted(CONFIG_MAPPING.items()):
            if model_type in done or (args.types and model_type not in args.types):
                continue
            start = time.time()
            signal.alarm(args.limit)
            try:
                record = sweep_one(model_type, config_class, args.out)
            except Timeout:
                record = {"type": model_type, "status": "timeout"}
            finally:
                signal.alarm(0)
            print(json.dumps(record | {"seconds": round(time.time() - start, 1)}), file=sink, flush=True)
            gc.collect()


if __name__ == "__main__":
    main()
