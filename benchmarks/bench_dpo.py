"""make bench-dpo: does preference tuning make a better model? (issue 23)

2-digit addition from the bundled BIG-bench file on SmolLM2-135M-Instruct (QLoRA):

1. SFT on the first 250 examples;
2. sample the SFT model's answers (temperature > 0) on those training prompts;
3. pairs: the reference answer preferred over each of the model's own distinct wrong
   answers (prompts whose samples are all right give none);
4. DPO from the SFT adapter (init_adapter: the reference is the SFT adapter), with
   rpo_alpha's NLL term on the preferred answer (0: plain DPO), and SimPO from it;
5. the control (--no-control skips it): the NLL term alone, supervised training from the
   SFT adapter on the same preferred answers with DPO's steps and lr, so a gain of SFT+DPO
   over SFT can be told apart from the extra supervised training on those answers.

Exact match on the next 200 examples (held out) for base, SFT, SFT+DPO, SFT+SimPO and
the control, with 95% bootstrap intervals, the wall time of every phase and a DPO step's time as a
ratio to an SFT step. Prints a table and writes JSON (--json).

    python -m benchmarks.bench_dpo [--train-examples 250] [--eval 200] [--sft-epochs 1]
        [--samples 4] [--temperature 1.0] [--dpo-epochs 2] [--dpo-lr 1e-4] [--beta 0.1]
        [--rpo-alpha 1.0] [--work-dir DIR] [--json benchmarks/results/dpo.json]

Smoke run (a few minutes on a 2-core CPU):
    python -m benchmarks.bench_dpo --train-examples 40 --eval 16 --sft-steps 6 \\
        --samples 2 --dpo-steps 3 --json /tmp/dpo-smoke.json

A --work-dir keeps every phase: run again and only what is missing (or trained with
other settings) is done, so DPO settings can be tried on one SFT run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.work_dir import in_work_dir

MODEL = "smollm2-135m-instruct"
TASK = "arithmetic-2_digit_addition"
ROOT = Path(__file__).resolve().parent.parent


class StepClock:
    """Hooks.progress that times each optimizer step from train's progress events (the
    first step, which also pays warm-up and DPO's reference pass, is left out of the
    median)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, phase: str, step: int, total: int | None, info: dict[str, Any]) -> None:
        if info.get("kind") == "step":
            self.times.append(time.monotonic())
            print(f"  step {step}/{total} loss {info['train_loss']:.4f}", file=sys.stderr)

    def median_s(self) -> float | None:
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return statistics.median(gaps) if gaps else None


class Bench:
    """The phases, each kept in the work folder once done (see the module's docstring)."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from finetune_core.data import bigbench_task_path, read_examples, to_chat_jsonl

        self.args, self.work = args, work
        examples = list(read_examples(bigbench_task_path(TASK)))
        self.train_ex = examples[: args.train_examples]
        self.eval_ex = examples[args.train_examples : args.train_examples + args.eval]
        to_chat_jsonl(self.train_ex, work / "train.jsonl")
        self.state_path = work / "bench_state.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        )

    def _save(self, key: str, value: Any) -> Any:
        self.state[key] = value
        self.state_path.write_text(json.dumps(self.state, indent=1))
        return value

    def train(self, name: str, **settings: Any) -> dict[str, Any]:
        """A QLoRA run under work/name (settings in the name's key); its wall time, steps
        and median step time."""
        from finetune_core.contracts.hooks import Hooks
        from finetune_core.train import TrainConfig, train

        key = f"train:{name}:{json.dumps(settings, sort_keys=True)}"
        if key in self.state:
            return self.state[key]
        out = self.work / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        clock, started = StepClock(), time.monotonic()
        result = train(
            TrainConfig(
                model=MODEL, output_dir=str(out), val_fraction=0.0, max_length=256,
                eval_every=10**6, save_every=10**6, quantization=self.args.quantization,
                seed=self.args.seed, **settings,
            ),
            hooks=Hooks(progress=clock),
        )  # fmt: skip
        return self._save(
            key,
            {
                "adapter": str(out / "adapter"),
                "wall_s": round(time.monotonic() - started, 1),
                "steps": result.steps,
                "train_loss": result.train_loss,
                "step_s": clock.median_s(),
                "last": {k: v for k, v in (result.history or [{}])[-1].items() if k != "step"},
            },
        )

    def evaluate(self, label: str, adapter: str | None) -> dict[str, Any]:
        from finetune_core.infer import load_chat_model
        from finetune_core.transfer.report import evaluate_chat

        key = f"eval:{label}:{adapter}:{len(self.eval_ex)}"
        if key in self.state:
            return self.state[key]
        started = time.monotonic()
        chat = load_chat_model(MODEL, adapter=adapter, quantization=self.args.quantization)
        result = evaluate_chat(chat, self.eval_ex, max_new_tokens=16, batch_size=16)
        result["wall_s"] = round(time.monotonic() - started, 1)
        print(f"{label}: {result['accuracy']:.1%} in {result['wall_s']} s", file=sys.stderr)
        return self._save(key, result)

    def sample(self, adapter: str) -> dict[str, Any]:
        """The SFT model's own answers on the training prompts, `samples` each."""
        from finetune_core.infer import generate, load_chat_model
        from finetune_core.transfer.report import prompt_of

        a = self.args
        key = f"sample:{adapter}:{a.samples}:{a.temperature}"
        if key in self.state:
            return self.state[key]
        started = time.monotonic()
        chat = load_chat_model(MODEL, adapter=adapter, quantization=a.quantization)
        jobs = [e for e in self.train_ex for _ in range(a.samples)]
        answers: list[str] = []
        for start in range(0, len(jobs), 32):
            batch = jobs[start : start + 32]
            out = generate(
                chat, [prompt_of(e) for e in batch], max_new_tokens=16,
                temperature=a.temperature, seed=a.seed + start,
            )  # fmt: skip
            answers += [g.text.strip() for g in out]
            print(f"  sampled {len(answers)}/{len(jobs)}", file=sys.stderr)
        return self._save(key, {"answers": answers, "wall_s": round(time.monotonic() - started, 1)})

    def pairs(self, answers: list[str]) -> dict[str, Any]:
        """The reference preferred over the model's wrong answers, most frequent first (at
        most pairs_per_prompt a prompt), written as OpenAI DPO JSONL."""
        from collections import Counter

        from finetune_core.transfer.report import prompt_of
        from finetune_core.transfer.seeds import exact_match, normalize, references_of

        k = self.args.samples
        lines, right = [], 0
        for i, example in enumerate(self.train_ex):
            mine, refs = answers[i * k : (i + 1) * k], references_of(example)
            right += sum(exact_match(x, refs) for x in mine)
            wrong = Counter(normalize(x) for x in mine if not exact_match(x, refs))
            text = {normalize(x): x for x in mine}
            for rejected, _ in wrong.most_common(self.args.pairs_per_prompt):
                lines.append({
                    "input": {"messages": prompt_of(example)},
                    "preferred_output": [{"role": "assistant", "content": example.messages[-1].content}],
                    "non_preferred_output": [{"role": "assistant", "content": text[rejected]}],
                })  # fmt: skip
        path = self.work / f"pairs-{self.args.pairs_per_prompt}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        # The control: the same preferred answers as plain chat data, one a pair.
        chosen = self.work / f"chosen-{self.args.pairs_per_prompt}.jsonl"
        chosen.write_text("".join(
            json.dumps({"messages": line["input"]["messages"] + line["preferred_output"]}) + "\n"
            for line in lines
        ))  # fmt: skip
        return {
            "path": str(path),
            "chosen_path": str(chosen),
            "samples": len(answers),
            "sample_accuracy": right / max(len(answers), 1),
            "prompts_with_pairs": len({json.dumps(line["input"]) for line in lines}),
            "pairs": len(lines),
            "examples": lines[:3],
        }


def table(scores: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | exact match | 95% CI | n |", "|---|---|---|---|"]
    for name, r in scores.items():
        ci = f"{r['low']:.1%}–{r['high']:.1%}"
        lines.append(f"| {name} | {r['accuracy']:.1%} | {ci} | {r['n']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bench = Bench(args, work)
    sft = bench.train(
        "sft", data=str(work / "train.jsonl"), data_format="chat", epochs=args.sft_epochs,
        max_steps=args.sft_steps, learning_rate=args.sft_lr, batch_size=args.sft_batch,
    )  # fmt: skip
    # Each model is scored as soon as it is trained (the figures that decide come first;
    # base, which scores nothing, last).
    scores = {"SFT": bench.evaluate("SFT", sft["adapter"])}
    sampled = bench.sample(sft["adapter"])
    pairs = bench.pairs(sampled["answers"])
    print(f"pairs: {pairs['pairs']} from {pairs['prompts_with_pairs']} prompts "
          f"(samples right: {pairs['sample_accuracy']:.1%})", file=sys.stderr)  # fmt: skip
    if not pairs["pairs"]:
        raise SystemExit("the SFT model answered every sample right: no pairs to learn from")
    common = {
        "data": pairs["path"], "init_adapter": sft["adapter"], "epochs": args.dpo_epochs,
        "max_steps": args.dpo_steps, "batch_size": args.dpo_batch,
    }  # fmt: skip
    dpo = bench.train(
        "dpo", training_method="dpo", beta=args.beta, learning_rate=args.dpo_lr,
        rpo_alpha=args.rpo_alpha, **common,
    )  # fmt: skip
    scores["SFT+DPO"] = bench.evaluate("SFT+DPO", dpo["adapter"])
    # The control for rpo_alpha: the NLL term alone, i.e. supervised training from the SFT
    # adapter on the same preferred answers with DPO's steps, pairs a step and lr (unpacked,
    # so a step sees the same answers). What SFT+DPO gains beyond it is the preference's.
    nll = None
    if args.control:
        nll = bench.train(
            "nll", data_format="chat", packing=False, learning_rate=args.dpo_lr,
            **(common | {"data": pairs["chosen_path"]}),
        )  # fmt: skip
        scores["SFT+NLL (control)"] = bench.evaluate("SFT+NLL", nll["adapter"])
    simpo: dict[str, Any] = {"wall_s": None, "step_s": None}
    if args.simpo:
        simpo = bench.train(
            "simpo", training_method="simpo", beta=args.simpo_beta,
            simpo_gamma=args.simpo_gamma, learning_rate=args.simpo_lr, **common,
        )  # fmt: skip
        scores["SFT+SimPO"] = bench.evaluate("SFT+SimPO", simpo["adapter"])
    scores = {"base": bench.evaluate("base", None)} | scores
    print(table(scores))
    phases = {"sft": sft["wall_s"], "sample": sampled["wall_s"], "dpo": dpo["wall_s"]}
    phases |= {"simpo": simpo["wall_s"]} if args.simpo else {}
    phases |= {"nll_control": nll["wall_s"]} if nll else {}
    phases |= {f"eval_{k}": v["wall_s"] for k, v in scores.items()}
    ratio = dpo["step_s"] / sft["step_s"] if dpo["step_s"] and sft["step_s"] else None
    beats = scores["SFT+DPO"]["accuracy"] - scores["SFT"]["accuracy"]
    half_ci = (scores["SFT"]["high"] - scores["SFT"]["low"]) / 2
    print("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
    print(f"step time: SFT {sft['step_s'] or 0:.2f} s, DPO {dpo['step_s'] or 0:.2f} s "
          f"(x{ratio or 0:.2f}), SimPO {simpo['step_s'] or 0:.2f} s")  # fmt: skip
    print(f"SFT+DPO - SFT = {beats:+.1%}; target: more than SFT's half-interval {half_ci:.1%}")
    if nll:
        over = scores["SFT+DPO"]["accuracy"] - scores["SFT+NLL (control)"]["accuracy"]
        print(f"SFT+DPO - SFT+NLL (control) = {over:+.1%}")
    return {
        "task": TASK,
        "model": MODEL,
        "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "json")},
        "train_examples": len(bench.train_ex),
        "eval_examples": len(bench.eval_ex),
        "exact_match": {
            k: {m: v[m] for m in ("accuracy", "low", "high", "n")} for k, v in scores.items()
        },
        "pairs": {k: v for k, v in pairs.items() if not k.endswith("path")},
        "runs": {"sft": sft, "dpo": dpo, "simpo": simpo} | ({"nll": nll} if nll else {}),
        "phase_seconds": phases,
        "dpo_step_over_sft_step": ratio,
        "dpo_minus_sft": beats,
        "dpo_minus_control": (
            beats - scores["SFT+NLL (control)"]["accuracy"] + scores["SFT"]["accuracy"]
            if nll
            else None
        ),
        "target_met": beats > half_ci,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--train-examples", type=int, default=250)
    p.add_argument("--eval", type=int, default=200, help="held-out examples scored")
    p.add_argument("--sft-epochs", type=int, default=1)
    p.add_argument("--sft-steps", type=int, help="cap the SFT run's steps")
    p.add_argument("--sft-lr", type=float, default=5e-4)
    # Examples are packed into 256-token rows: 2 rows a step is ~20 examples.
    p.add_argument("--sft-batch", type=int, default=2)
    p.add_argument("--samples", type=int, default=4, help="SFT answers sampled per prompt")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--pairs-per-prompt", type=int, default=1)
    p.add_argument("--dpo-epochs", type=int, default=2, help="DPO and SimPO epochs")
    p.add_argument("--dpo-steps", type=int, help="cap the DPO and SimPO runs' steps")
    p.add_argument("--dpo-batch", type=int, default=4, help="pairs a step")
    p.add_argument("--dpo-lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument(
        "--rpo-alpha", type=float, default=1.0,
        help="DPO's NLL weight on the preferred answer (0: plain DPO)",
    )  # fmt: skip
    p.add_argument(
        "--control", action=argparse.BooleanOptionalAction, default=True,
        help="also train the NLL term alone (supervised on the preferred answers)",
    )  # fmt: skip
    p.add_argument(
        "--simpo", action=argparse.BooleanOptionalAction, default=True, help="train SimPO too"
    )
    p.add_argument("--simpo-lr", type=float, default=2e-5)
    p.add_argument("--simpo-beta", type=float, default=2.0)
    p.add_argument("--simpo-gamma", type=float, default=1.0)
    p.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/dpo.json"))
    args = p.parse_args()
    result = in_work_dir(args.work_dir, lambda work: run(args, work))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
