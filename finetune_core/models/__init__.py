from finetune_core.models.loading import load_model, load_tokenizer
from finetune_core.models.prepare import prepare
from finetune_core.models.registry import BUILTIN, ModelSpec, is_cached, read_marker, resolve

__all__ = [
    "BUILTIN",
    "ModelSpec",
    "is_cached",
    "load_model",
    "load_tokenizer",
    "prepare",
    "read_marker",
    "resolve",
]
