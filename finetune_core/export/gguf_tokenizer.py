"""The tokenizer in a GGUF's metadata, so llama.cpp splits text into the same tokens the
run trained on and applies the same chat template. Two kinds: byte-level BPE ("gpt2" in
llama.cpp: SmolLM2, the tiny models) and SentencePiece-style BPE with byte fallback
("llama" in llama.cpp: Gemma), which llama.cpp merges by score instead of by merge list."""

from __future__ import annotations

import json
import re
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


BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def token_table(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, byte_fallback: bool
) -> tuple[list[str], list[int]]:
    """Every id's token text and llama.cpp token type; ids the tokenizer lacks are unused.
    With byte fallback, <0xNN> pieces are the bytes llama.cpp falls back to."""
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
            byte = byte_fallback and BYTE_TOKEN.fullmatch(by_id[i])
            kinds.append(types.BYTE if byte else types.NORMAL)
    return tokens, [int(k) for k in kinds]


def merge_scores(tokens: list[str], kinds: list[int], merges: list[str]) -> list[float]:
    """SentencePiece scores from BPE merges: llama.cpp merges the adjacent pair whose result
    scores highest, so a piece scores minus the rank of the first merge that makes it.
    Pieces no merge makes (single characters) follow in id order; control and user-defined
    tokens are never merged into (-1000, as SentencePiece writes them)."""
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", "", 1), r)
    scores = []
    for i, (token, kind) in enumerate(zip(tokens, kinds, strict=True)):
        if kind == gguf.TokenType.NORMAL:
            scores.append(-float(rank.get(token, len(merges) + i)))
        else:
            scores.append(0.0 if kind == gguf.TokenType.BYTE else -1000.0)
    return scores


def _prepends_space(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts "▁" before the text (SentencePiece's dummy prefix): a
    Prepend normalizer (older llama-style files) or a Metaspace pre-tokenizer that does."""
    norm, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    parts = norm.get("normalizers", [norm]) + pre.get("pretokenizers", [pre])
    return any(
        p.get("type") == "Prepend"
        or (p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never")
        for p in parts
    )


def _add_vocabulary(
    writer: gguf.GGUFWriter, spec: dict[str, Any], tokens: list[str], kinds: list[int]
) -> dict[str, Any]:
    """The vocabulary in the form llama.cpp reads for this kind of tokenizer."""
    model = spec["model"]
    merges = _merges(model)
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    if model.get("byte_fallback"):
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(merge_scores(tokens, kinds, merges))
        writer.add_add_space_prefix(_prepends_space(spec))
        return {"tokenizer": "llama", "pre_tokenizer": "default", "merges": len(merges)}
    pre = _pre_tokenizer(spec.get("pre_tokenizer"), bool(merges))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_merges(merges)
    return {"tokenizer": "gpt2", "pre_tokenizer": pre, "merges": len(merges)}


def add_tokenizer(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> dict[str, Any]:
    """Write the tokenizer, its special tokens and chat template; returns what was written."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE":
        raise ExportError(
            f"the GGUF writer handles BPE tokenizers (byte-level, or SentencePiece-style with "
            f"byte fallback), not {model['type']}",
            code="export_unsupported_tokenizer",
        )
    tokens, kinds = token_table(tokenizer, vocab_size, bool(model.get("byte_fallback")))
    written = _add_vocabulary(writer, spec, tokens, kinds)
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
    return {**written, "tokens": len(tokens)}
