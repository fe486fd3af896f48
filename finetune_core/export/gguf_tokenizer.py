"""The tokenizer in a GGUF's metadata, so llama.cpp splits text into the same tokens the
run trained on and applies the same chat template. Byte-level BPE ("gpt2" in llama.cpp)
is what the llama-family models here use."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import gguf

from finetune_core.export.common import ExportError
from finetune_core.models.loading import end_of_turn_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _pre_tokenizer(spec: dict[str, Any] | None, has_merges: bool) -> str:
    """llama.cpp's name for the way the tokenizer splits text before BPE."""
    parts = spec.get("pretokenizers", [spec]) if spec else []
    kinds = [(p.get("type"), p.get("individual_digits"), p.get("use_regex")) for p in parts]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt-2"
    if kinds == [("Digits", True, None), ("ByteLevel", None, True)]:
        return "smollm"  # digits one by one, then GPT-2's split
    if kinds == [("ByteLevel", None, False)] and not has_merges:
        return "gpt-2"  # bytes only, no merges: any split gives the same tokens
    raise ExportError(
        f"the GGUF writer does not know this tokenizer's pre-tokenizer ({kinds}); it knows "
        "GPT-2's byte-level split and SmolLM's digit split",
        code="export_unsupported_tokenizer",
    )


def _merges(model: dict[str, Any]) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _tokens(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token text and llama.cpp token type; ids the tokenizer lacks are unused."""
    types = gguf.TokenType
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    size = max(vocab_size, max(by_id) + 1)
    tokens, kinds = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            kinds.append(types.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            kinds.append(types.CONTROL if added[i].special else types.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            kinds.append(types.NORMAL)
    return tokens, [int(k) for k in kinds]


def add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> dict[str, Any]:
    """Write the tokenizer, its special tokens and chat template; returns what was written."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE" or model.get("byte_fallback"):
        raise ExportError(
            f"the GGUF writer handles byte-level BPE tokenizers, not {model['type']}"
            f"{' with byte fallback (SentencePiece style)' if model.get('byte_fallback') else ''}",
            code="export_unsupported_tokenizer",
        )
    merges = _merges(model)
    pre = _pre_tokenizer(spec.get("pre_tokenizer"), bool(merges))
    tokens, kinds = _tokens(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    writer.add_token_merges(merges)
    special = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    for role, token_id in special.items():
        if token_id is not None:
            getattr(writer, f"add_{role}_token_id")(token_id)
    # Whether plain text gets a BOS or EOS is what the tokenizer does, not what it declares.
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(special["bos"] is not None and probe[0] == special["bos"])
    writer.add_add_eos_token(special["eos"] is not None and probe[-1] == special["eos"])
    end_of_turn = [i for i in end_of_turn_ids(tokenizer) if i != special["eos"]]
    if end_of_turn:
        writer.add_eot_token_id(end_of_turn[0])
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    return {"tokenizer": "gpt2", "pre_tokenizer": pre, "tokens": len(tokens), "merges": len(merges)}
