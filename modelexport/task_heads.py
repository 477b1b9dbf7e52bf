"""Task heads: which transformers class each ``--task`` loads, what ``--task auto`` reads from a config's
``architectures``, and the one head transformers lacks (sentence embeddings: a base model plus mean pooling).

Task names and output names follow optimum's task manager (``logits``, ``start_logits``/``end_logits``,
``last_hidden_state``, ``token_embeddings``/``sentence_embedding``) so files drop in where optimum's do.
Generation with a cache (``*-with-past``) is not here: those exports take and return the cache.
"""

from __future__ import annotations

import torch
from torch import nn

# --task -> (transformers auto class, the auto mapping whose classes are that head, for --task auto)
HEADS = {
    "feature-extraction": ("AutoModel", "MODEL_MAPPING_NAMES"),
    "text-classification": ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    "token-classification": ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    "question-answering": ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    "multiple-choice": ("AutoModelForMultipleChoice", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES"),
    "fill-mask": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    "text-generation": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    "text2text-generation": ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    "image-classification": ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    "object-detection": ("AutoModelForObjectDetection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"),
    "semantic-segmentation": ("AutoModelForSemanticSegmentation", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"),
    "image-segmentation": ("AutoModelForImageSegmentation", "MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES"),
    "audio-classification": ("AutoModelForAudioClassification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    "automatic-speech-recognition": ("AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
    "zero-shot-image-classification": (
        "AutoModelForZeroShotImageClassification",
        "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    ),
    "sentence-embeddings": ("AutoModel", None),
}
AUTO = "auto"
# --task auto tries the heads in this order; a class in several mappings (CLIPModel is a base model and a
# zero-shot classifier) gets the first, the base model last.
AUTO_ORDER = [task for task in HEADS if task not in ("feature-extraction", "sentence-embeddings")] + [
    "feature-extraction"
]


def task_from_architectures(config) -> str | None:
    """The task whose head the config's ``architectures`` names (e.g. ``BertForQuestionAnswering``), or None."""
    from transformers.models.auto import modeling_auto

    names = getattr(config, "architectures", None) or []
    for task in AUTO_ORDER:
        classes = set(getattr(modeling_auto, HEADS[task][1]).values())
        if any(name in classes for name in names):
            return task
    return None


class SentenceEmbeddings(nn.Module):
    """A base model's token embeddings and their mean over the attention mask (sentence-transformers' default
    pooling), named as optimum's sentence-transformers export names them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(tokens.shape[:2], dtype=tokens.dtype, device=tokens.device)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        sentence = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return {"token_embeddings": tokens, "sentence_embedding": sentence}


def wrap_for_task(model: nn.Module, task: str | None) -> nn.Module:
    """The module to export for `task`: the loaded head itself, or the pooling wrapper for sentence embeddings."""
    return SentenceEmbeddings(model).eval() if task == "sentence-embeddings" else model
