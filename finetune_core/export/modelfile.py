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
    "<start_of_turn>": (  # Gemma: the system text opens the first user turn
        # Only Go's builtins and ollama's own functions (json, currentDate, ...) exist at
        # `ollama create`: no arithmetic, so the first user turn is found as index 1 after
        # a system message (ollama puts the joined system text in .System).
        '{{- range $i, $_ := .Messages }}{{- if eq .Role "user" }}<start_of_turn>user\n'
        "{{ if and (eq $i 1) $.System }}{{ $.System }}\n\n{{ end }}{{ .Content }}<end_of_turn>\n"
        '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
        "{{ end }}{{ end }}<start_of_turn>model\n"
    ),
}


def ollama_template(chat_template: str | None) -> str | None:
    for marker, template in OLLAMA_TEMPLATES.items():
        if chat_template and marker in chat_template:
            return template
    return None


def default_system(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The system text a ChatML template writes when a conversation has none (SmolLM2's
    "You are a helpful AI assistant named SmolLM, ..."): training rendered it, and Ollama
    sends a Modelfile's SYSTEM only when a request has no system message of its own."""
    start = "<|im_start|>system\n"
    if not tokenizer.chat_template or start not in tokenizer.chat_template:
        return None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}], tokenize=False, add_generation_prompt=True
    )
    if tokenizer.bos_token and tokenizer.bos_token != "<|im_start|>":
        text = text.removeprefix(tokenizer.bos_token)
    if not text.startswith(start):
        return None
    return text[len(start) :].split("<|im_end|>", 1)[0]


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
        system = default_system(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
    for token_id in end_of_turn_ids(tokenizer):
        lines.append(f'PARAMETER stop "{tokenizer.convert_ids_to_tokens(token_id)}"')
    return "\n".join(lines) + "\n", warnings
