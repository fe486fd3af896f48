"""The Ollama Modelfile's TEMPLATE and SYSTEM, held to what ollama itself accepts.

Ollama is on no registry this project reaches, so `ollama create` cannot run here. Checked
once by hand (issue 24) with ollama's own Go code at commit fb30760 (v0.33.0-rc2):
parser.ParseFile + Modelfile.CreateRequest (what `ollama create` sends), the server's
template.Parse (server/create.go setTemplate), and Template.Execute on four conversations,
with the Modelfile's SYSTEM put first as server/routes.go's ChatHandler does: SmolLM2's and
Gemma-3's exports rendered byte for byte what transformers' Jinja template renders (Gemma
less its leading <bos>, which llama.cpp adds from the GGUF's add_bos_token). Both f16
GGUFs of a seeded run decoded in ollama's fs/ggml.Decode as `ollama create` reads them
(llama, 30 blocks; gemma3, 18 blocks; no general.type, so a model layer, not an adapter). The Gemma TEMPLATE before
this called `sub`, which ollama does not define: `ollama create` failed with
`template: :4: function "sub" not defined`. The rule below keeps that from coming back."""

from __future__ import annotations

import re

import pytest

from finetune_core.export.modelfile import OLLAMA_TEMPLATES, default_system, modelfile
from finetune_core.models import load_tokenizer

# Go's text/template builtins, and ollama's template.funcs (template/template.go, fb30760):
# the only functions a TEMPLATE may call at `ollama create`.
GO_BUILTINS = {
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not",
    "or", "print", "printf", "println", "slice", "urlquery",
}  # fmt: skip
OLLAMA_FUNCS = {"json", "currentDate", "yesterdayDate", "toTypeScriptType"}
GO_KEYWORDS = {
    "block", "break", "continue", "define", "else", "end", "false", "if", "nil", "range",
    "template", "true", "with",
}  # fmt: skip


def functions_called(template: str) -> set[str]:
    """Bare identifiers in the template's actions: Go reads each as a function call
    (fields start with '.', variables with '$')."""
    names: set[str] = set()
    for action in re.findall(r"{{-?(.*?)-?}}", template, flags=re.S):
        action = re.sub(r'"(?:[^"\\]|\\.)*"', '""', action)  # string literals hold no calls
        names |= set(re.findall(r"(?<![\w.$])[A-Za-z_]\w*", action))
    return names - GO_KEYWORDS


def test_the_rule_finds_a_function_ollama_lacks() -> None:
    called = functions_called("{{ range $i, $_ := .Messages }}{{ index $.M (sub $i 1) }}{{ end }}")
    assert called == {"index", "sub"}


@pytest.mark.parametrize("marker", OLLAMA_TEMPLATES)
def test_templates_call_only_functions_ollama_defines(marker: str) -> None:
    called = functions_called(OLLAMA_TEMPLATES[marker])
    assert called <= GO_BUILTINS | OLLAMA_FUNCS, called - GO_BUILTINS - OLLAMA_FUNCS


@pytest.mark.integration
def test_smollm2_modelfile_carries_the_system_text_training_saw() -> None:
    # SmolLM2's Jinja template writes this system turn when a conversation has none, so
    # every fine-tune saw it; Ollama sends SYSTEM exactly then.
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert default_system(tokenizer) == system
    text, warnings = modelfile("m.gguf", tokenizer)
    assert f'SYSTEM """{system}"""' in text.splitlines() and warnings == []


@pytest.mark.integration
def test_gemma_modelfile_has_no_system_of_its_own() -> None:
    tokenizer = load_tokenizer("gemma-3-270m")
    assert default_system(tokenizer) is None
    text, _ = modelfile("m.gguf", tokenizer)
    assert "SYSTEM" not in text and 'PARAMETER stop "<end_of_turn>"' in text
