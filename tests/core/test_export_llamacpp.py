"""SmolLM2-135M-Instruct (llama) and Gemma-3-270M (gemma3) exports checked in the tools
they are for: the GGUF in llama.cpp itself (node-llama-cpp's prebuilt binary, tools/llama)
against transformers on the merged model, Gemma's GGUF read back by transformers' own GGUF
loader, and the portable adapter in plain peft by its recorded hub id.

Each run is the cached base with a small seeded LoRA adapter (a real fine-tune takes
minutes per step on a shared CPU)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.bench_export_speed import seeded_run
from finetune_core.export import export_run
from finetune_core.models import load_tokenizer, prepare
from finetune_core.models.loading import end_of_turn_ids

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
LLAMA = Path(__file__).resolve().parents[2] / "tools" / "llama"
NEW_TOKENS = 24
Q8_AGREEMENT = 0.3  # share of greedy tokens q8_0 must match in place (measured: 0.42)
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three primary colours.",
    "How do I boil an egg?",
    "What is 12 plus 30?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Give me a synonym for happy.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat in one sentence.",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return seeded_run(tmp_path_factory.mktemp("run") / "smol", MODEL)


def llama_cpp(
    gguf_file: Path, prompts: list[str], tmp_path: Path, new_tokens: int = NEW_TOKENS
) -> dict:
    assert (LLAMA / "node_modules" / "node-llama-cpp").is_dir(), "run make setup (npm ci)"
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    done = subprocess.run(
        ["node", str(LLAMA / "greedy.mjs"), str(gguf_file), str(prompts_file), str(new_tokens)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "LLAMA_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def transformers_greedy(
    folder: Path, prompt_ids: list[list[int]], stop: list[int], new_tokens: int = NEW_TOKENS
) -> list:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for ids in prompt_ids:
        with torch.no_grad():
            gen = model.generate(
                torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                eos_token_id=stop, pad_token_id=stop[0],
            )[0, len(ids) :].tolist()  # fmt: skip
        out.append([t for t in gen if t not in stop])
    return out


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for p, q in zip(a, b, strict=True) for x, y in zip(p, q, strict=False))
    return same / sum(max(len(p), len(q)) for p, q in zip(a, b, strict=True))


def chat_prompts(model_name: str, prompts: list[str]) -> tuple[list[str], list[list[int]]]:
    """Each prompt as one user turn under the run's chat template: text and token ids."""
    tok = load_tokenizer(model_name)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    return texts, [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def check_in_llama_cpp(
    run: Path, model_name: str, prompts: list[str], new_tokens: int, q8_threshold: float,
    tmp_path: Path,
) -> dict:  # fmt: skip
    """f16 answers token for token as transformers does on the merged model; q8_0 agrees
    above the threshold. Returns the f16 export's manifest."""
    texts, prompt_ids = chat_prompts(model_name, prompts)
    merged = export_run(run, fmt="merged", type_="f16", out=tmp_path / "merged", measure=False)
    f16 = export_run(run, fmt="gguf", type_="f16", out=tmp_path / "f16")
    q8 = export_run(run, fmt="gguf", type_="q8_0", out=tmp_path / "q8")
    assert merged["warnings"] == [] and f16["warnings"] == []

    stop = end_of_turn_ids(load_tokenizer(model_name))
    ours = transformers_greedy(tmp_path / "merged", prompt_ids, stop, new_tokens)
    llama = llama_cpp(tmp_path / "f16" / f16["gguf_file"], texts, tmp_path, new_tokens)
    # llama.cpp splits the text into the same tokens and answers with the same tokens
    assert [r["prompt_tokens"] for r in llama["results"]] == prompt_ids
    assert [r["tokens"] for r in llama["results"]] == ours
    assert sum(len(t) for t in ours) >= len(prompts) * new_tokens // 3  # real answers
    quantized = llama_cpp(tmp_path / "q8" / q8["gguf_file"], texts, tmp_path, new_tokens)
    share = agreement([r["tokens"] for r in quantized["results"]], ours)
    print(f"q8_0 greedy agreement, {model_name}: {share:.2f}")
    assert share >= q8_threshold
    return f16


def test_f16_gguf_matches_transformers_token_for_token_in_llama_cpp(run, tmp_path) -> None:
    check_in_llama_cpp(run, MODEL, PROMPTS, NEW_TOKENS, Q8_AGREEMENT, tmp_path)


GEMMA_PROMPTS = [  # Gemma-3-270M is a base model: prompts it continues fluently
    "The capital of France is",
    "Write a haiku about the sea.",
    "Name   three primary colours:\n\n1.",  # runs of spaces and newlines are own tokens
    "def fibonacci(n):",
    "Once upon a time, a robot",
]
GEMMA_NEW_TOKENS = 16
GEMMA_Q8_AGREEMENT = 0.4  # measured: 0.56


def test_gemma3_gguf_matches_transformers_in_llama_cpp_and_in_its_gguf_loader(
    tmp_path,
) -> None:
    import gguf
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = seeded_run(tmp_path / "gemma", GEMMA)
    f16 = check_in_llama_cpp(
        run, GEMMA, GEMMA_PROMPTS, GEMMA_NEW_TOKENS, GEMMA_Q8_AGREEMENT, tmp_path
    )
    path = tmp_path / "f16" / f16["gguf_file"]
    fields = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}
    assert fields["general.architecture"] == "gemma3"
    assert fields["tokenizer.ggml.model"] == "llama"  # SentencePiece-style, merged by score
    assert "<start_of_turn>" in fields["tokenizer.chat_template"]
    assert fields["tokenizer.ggml.eot_token_id"] == 106  # <end_of_turn>
    modelfile = (tmp_path / "f16" / "Modelfile").read_text()
    assert 'PARAMETER stop "<end_of_turn>"' in modelfile and "<start_of_turn>model" in modelfile

    # A second reader: transformers' GGUF loader finds the merged weights (it takes the 1
    # off Gemma's norms again: those agree to float32 rounding, the matrices exactly).
    ours = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
    base = AutoModelForCausalLM.from_pretrained(prepare(GEMMA), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, run / "adapter").merge_and_unload().state_dict()
    assert ours.keys() == merged.keys()
    for name, weight in merged.items():
        if weight.dim() == 1:
            torch.testing.assert_close(ours[name].float(), weight, rtol=0, atol=1e-6)
        else:
            assert torch.equal(ours[name].to(torch.float16), weight.to(torch.float16)), name


def test_exported_adapter_loads_in_plain_peft_by_its_hub_id(run, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune_core.models.prepare import gguf_path
    from finetune_core.models.registry import resolve
    from finetune_core.train.outputs import file_sha256

    manifest = export_run(run, fmt="adapter", out=tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    hub_id = config["base_model_name_or_path"]
    assert hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and manifest["warnings"] == []
    weights = manifest["trained_against"]
    source = gguf_path(resolve(MODEL))
    assert weights["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" == source.name
    assert weights["sha256"] == file_sha256(source)

    local = {hub_id: prepare(MODEL)}  # a user's copy of the public weights
    ids = torch.tensor([list(range(100, 140))])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(local[hub_id], dtype=torch.float32)
        exported = PeftModel.from_pretrained(base, tmp_path / "adapter")(ids).logits
        base = AutoModelForCausalLM.from_pretrained(local[hub_id], dtype=torch.float32)
        original = PeftModel.from_pretrained(base, run / "adapter")(ids).logits
    assert torch.equal(exported, original)
