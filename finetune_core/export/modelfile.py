"""An Ollama `Modelfile` beside the GGUF, so `ollama create NAME -f Modelfile` works as is.
Ollama's templates are Go templates, not Jinja: each chat format we ship has its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune_core.models.loading import end_of_turn_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# A marker the Jinja chat template contains -> the same turn format in Ollama's Go syntax.
OLLAMA_TEMPLATES = {
    "<|im_start|>": (  # ChatML (SmolLM2, the tiny models)
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    ),
    "<start_of_turn>": (  # Gemma: a system message opens the first user turn
        '{{- range $i, $_ := .Messages }}{{- if eq .Role "system" }}<start_of_turn>user\n'
        '{{ .Content }}\n\n{{- else if eq .Role "user" }}{{ if or (eq $i 0) '
        '(ne (index $.Messages (sub $i 1)).Role "system") }}<start_of_turn>user\n{{ end }}'
        "{{ .Content }}<end_of_turn>\n{{- else }}<start_of_turn>model\n{{ .Content }}"
        "<end_of_turn>\n{{ end }}{{ end }}<start_of_turn>model\n"
    ),
}


def ollama_template(chat_template: str | None) -> str | None:
    for marker, template in OLLAMA_TEMPLATES.items():
        if chat_template and marker in chat_template:
            return template
    return None


def modelfile(gguf_name: str, tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[str]]:
    """The Modelfile's text, and warnings (a chat format Ollama cannot be told)."""
    lines = [f"FROM ./{gguf_name}"]
    warnings = []
    template = ollama_template(tokenizer.chat_template)
    if template is None:
        warnings.append(
            "no Ollama TEMPLATE for this chat format: Ollama will use the GGUF's own "
            "chat template metadata"
        )
    else:
        lines.append(f'TEMPLATE """{template}"""')
    for token_id in end_of_turn_ids(tokenizer):
        lines.append(f'PARAMETER stop "{tokenizer.convert_ids_to_tokens(token_id)}"')
    return "\n".join(lines) + "\n", warnings
