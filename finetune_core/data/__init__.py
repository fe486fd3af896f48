"""Datasets: read and validate files in several formats, token stats, train/val split."""

from finetune_core.data.formats import (
    FORMATS,
    ISSUE_CODES,
    DataIssue,
    bigbench_task_path,
    detect_format,
    to_chat_jsonl,
)
from finetune_core.data.split import train_val_split
from finetune_core.data.stats import count_tokens, dataset_stats
from finetune_core.data.types import Example, Message
from finetune_core.data.validate import (
    ValidationReport,
    iter_records,
    read_examples,
    validate_file,
)

# render/pack exports are added here by data/render.py's owner.

__all__ = [
    "FORMATS",
    "ISSUE_CODES",
    "DataIssue",
    "Example",
    "Message",
    "ValidationReport",
    "bigbench_task_path",
    "count_tokens",
    "dataset_stats",
    "detect_format",
    "iter_records",
    "read_examples",
    "to_chat_jsonl",
    "train_val_split",
    "validate_file",
]
