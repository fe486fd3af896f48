"""Take a finished run anywhere: merged Hugging Face weights, GGUF for llama.cpp and
Ollama, or a portable PEFT adapter. `export_run` is the one entry point (CLI and workers)."""

from finetune_core.export.api import export_run
from finetune_core.export.common import ExportError

__all__ = ["ExportError", "export_run"]
