"""make bench-dpo-loop: the product's own preference loop once, on real evaluations (issue 23).

evaluation -> "Make preference data" -> DPO -> re-evaluation, each step through the same
services the notebook's buttons call, run by make run's workers (workers.embedded) on a
fresh SQLite database in a temporary folder, starting from the demo notebook
(`demo_setup`: 400 BIG-bench 2-digit additions, SmolLM2-135M-Instruct in 4-bit):

1. SFT: the demo's fine-tune cell (one epoch over 360 examples), saving a checkpoint
   every --save-every steps.
2. Harvest: an evaluation of the SFT's checkpoint --checkpoint against its final adapter
   on --harvest prompts it trained on, judged pairwise by the local judge (Gemma-3-270M,
   reference-guided, verdict first, both orders). Two versions of one model answer alike on most prompts
   and differently where one of them is wrong: the pairs DPO learns from.
3. "Make preference data" from that comparison, validated by the worker as an upload
   is: consistent verdicts, and (unless --strict) flipped ones by the judge's
   position-calibrated verdict, the page's opt-in. Gemma-3-270M prefers the first slot so
   strongly that every verdict of two earlier runs flipped with the order (60 of 60).
4. DPO from the SFT's final adapter ("Start from" the SFT cell) on those pairs.
5. Re-evaluation: SFT against SFT+DPO on --held-out BIG-bench questions none of the 400
   holds, judged as in 2. Reports the judge's win rate of the DPO model over the SFT
   model with the product's 95% bootstrap CI (strict, and position-calibrated), both
   models' exact match, how many kept pairs prefer the reference answer, and wall times.

    python -m benchmarks.bench_dpo_loop [--harvest 200] [--held-out 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_demo import run_cell, setup_demo, start_workers, wait

ROOT = Path(__file__).resolve().parent.parent
BIGBENCH = ROOT / "finetune_core" / "assets" / "bigbench" / "arithmetic-2_digit_addition.json"
DEMO_DATA = ROOT / "finetune_core" / "assets" / "demo" / "addition_400.jsonl"
JUDGED = {"judge_mode": "auto", "judge_model": "gemma-3-270m", "judge_max_tokens": 0}
JUDGED |= {"max_new_tokens": 16}  # a sum and its end


def prompt_sets(harvest: int, held_out: int) -> tuple[bytes, bytes, int]:
    """(harvest prompts: the first of the demo's 400, held-out prompts: BIG-bench questions
    none of the 400 holds, how many BIG-bench questions were skipped as seen) as JSONL."""
    seen = [json.loads(line)["messages"] for line in DEMO_DATA.read_text().splitlines()]
    known = {m[0]["content"] for m in seen}
    rows = lambda pairs: "".join(  # noqa: E731 - one line's shape, used twice
        json.dumps({"prompt": q, "reference": a}) + "\n" for q, a in pairs
    ).encode()
    harvest_pairs = [(m[0]["content"], m[1]["content"]) for m in seen[:harvest]]
    fresh, skipped = [], 0
    for example in json.loads(BIGBENCH.read_text())["examples"]:
        if example["input"] in known:
            skipped += 1
            continue
        known.add(example["input"])  # and each question once
        fresh.append((example["input"], example["target"]))
    return rows(harvest_pairs), rows(fresh[:held_out]), skipped


def upload_prompts(team: Any, user: Any, name: str, body: bytes) -> Any:
    """An "Evaluation prompts" dataset, once the worker has validated it."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.datasets.models import DatasetPurpose
    from webapp.datasets.services import dataset_version_create

    upload = SimpleUploadedFile(f"{name}.jsonl", body, content_type="application/jsonl")
    version = dataset_version_create(
        team=team, name=name, upload=upload, created_by=user, purpose=DatasetPurpose.EVALUATION
    )
    return validated(version)


def validated(version: Any) -> Any:
    """`version` once the worker has validated it; the bench stops if it is invalid."""
    from webapp.datasets.models import DatasetVersion, VersionStatus

    done = (VersionStatus.VALID, VersionStatus.INVALID)
    wait(
        f"validation of {version}",
        lambda: DatasetVersion.objects.get(pk=version.pk).status in done,
        600,
    )
    version.refresh_from_db()
    if version.status != VersionStatus.VALID:
        raise SystemExit(f"{version}: {version.status} {version.report}")
    return version


def evaluation_cell(project: Any, user: Any, prompts: Any, slots: dict[str, Any]) -> Any:
    from webapp.projects.services import cell_create

    config = {"source": "prompt_dataset", "prompt_dataset": prompts.dataset_id, "base_model": ""}
    config |= {"max_prompts": 2000, **JUDGED, **slots}
    return cell_create(project=project, kind="evaluation", config=config, created_by=user)


def progress(job: Any) -> None:
    print(f"  {job.progress_message} ({job.progress_current}/{job.progress_total})", flush=True)


def summary_of(run: Any) -> dict[str, Any]:
    from webapp.evaluations.models import Evaluation

    return Evaluation.objects.get(run=run).summary


def win_rate(summary: dict[str, Any], of: str, key: str = "pairs") -> dict[str, Any]:
    """`of`'s win rate over the other candidate (ties count half), with the product's CI
    (`key` "pairs_calibrated": by the position-calibrated verdicts)."""
    if not summary.get(key):
        return {}
    (pair,) = summary[key]
    flip = pair["b"] == of
    rate = {k: pair[k] for k in ("win_rate", "ci_low", "ci_high")}
    if flip:
        rate = {"win_rate": 1 - rate["win_rate"], "ci_low": 1 - rate["ci_high"],
                "ci_high": 1 - rate["ci_low"]}  # fmt: skip
    wins, losses = (pair["losses"], pair["wins"]) if flip else (pair["wins"], pair["losses"])
    counts = {"wins": wins, "losses": losses, "ties": pair["ties"], "n": pair["n"]}
    return {**rate, **counts, "inconsistent": pair["inconsistent"]}


def exact_match(summary: dict[str, Any]) -> dict[str, Any]:
    from webapp.evaluations.selectors import exact_match_rows

    return {r["label"]: {k: r[k] for k in ("value", "ci_low", "ci_high", "correct", "n")}
            for r in exact_match_rows(summary)}  # fmt: skip


def loop(args: argparse.Namespace) -> dict[str, Any]:
    from webapp.datasets.models import DatasetVersion
    from webapp.evaluations.models import Evaluation
    from webapp.evaluations.preference import preference_selection
    from webapp.evaluations.services import preference_data_create
    from webapp.jobs.models import Job
    from webapp.projects.models import Cell
    from webapp.projects.services import cell_create, cell_update

    sft_cell = Cell.objects.get(kind="finetune")
    project, user = sft_cell.project, sft_cell.created_by
    seconds: dict[str, float] = {}
    validated(DatasetVersion.objects.get())
    cell_update(cell=sft_cell, config={**sft_cell.config, "save_every": args.save_every})
    sft, seconds["sft"] = run_cell(sft_cell, progress)

    harvest_body, held_body, skipped = prompt_sets(args.harvest, args.held_out)
    harvest_prompts = upload_prompts(project.team, user, "Harvest prompts", harvest_body)
    held_prompts = upload_prompts(project.team, user, "Held-out prompts", held_body)
    slots = {"adapter_cell": sft_cell.pk, "checkpoint": str(args.checkpoint),
             "adapter_cell_2": sft_cell.pk}  # fmt: skip
    harvest_cell = evaluation_cell(project, user, harvest_prompts, slots)
    harvest, seconds["harvest_evaluation"] = run_cell(harvest_cell, progress)
    evaluation = Evaluation.objects.get(run=harvest)
    calibrated = not args.strict
    selection = preference_selection(evaluation=evaluation, calibrated=calibrated)
    if not selection.kept:  # say why before the service refuses
        raise SystemExit(
            f"no pair kept: dropped {dict(selection.dropped)}; harvest exact match "
            f"{exact_match(summary_of(harvest))}; pairs {summary_of(harvest).get('pairs')}"
        )
    pairs = preference_data_create(
        evaluation=evaluation, created_by=user, name="Judged pairs", calibrated=calibrated
    )
    pairs = validated(pairs)

    pairs_cell = cell_create(project=project, kind="dataset",
                             config={"dataset": pairs.dataset_id}, created_by=user)  # fmt: skip
    dpo_config = {**sft_cell.config, "dataset_cell": pairs_cell.pk, "init_cell": sft_cell.pk,
                  "training_method": "dpo", "beta": args.beta, "rpo_alpha": args.rpo_alpha,
                  "learning_rate": args.dpo_lr, "epochs": args.dpo_epochs}  # fmt: skip
    dpo_cell = cell_create(project=project, kind="finetune", config=dpo_config, created_by=user)
    dpo, seconds["dpo"] = run_cell(dpo_cell, progress)

    final_slots = {"adapter_cell": sft_cell.pk, "adapter_cell_2": dpo_cell.pk}
    final, seconds["re_evaluation"] = run_cell(
        evaluation_cell(project, user, held_prompts, final_slots), progress
    )
    harvested, compared = summary_of(harvest), summary_of(final)
    dpo_label = f"{dpo_cell} v{dpo.version}"
    return {
        "statuses": {
            "sft": sft.status,
            "harvest": harvest.status,
            "dpo": dpo.status,
            "re_evaluation": final.status,
        },
        "harvest_prompts": args.harvest,
        "held_out_prompts": held_prompts.n_examples,
        "bigbench_skipped_as_seen": skipped,
        "harvest_exact_match": exact_match(harvested),
        "harvest_pairs": harvested["pairs"],
        "pairs_kept": len(selection.kept),
        "pairs_by_source": selection.by_source,
        "pairs_dropped": dict(selection.dropped),
        "pairs_against_references": selection.reference_agreement,
        "pairs_valid": pairs.n_examples,
        "dpo": {
            "beta": args.beta,
            "rpo_alpha": args.rpo_alpha,
            "lr": args.dpo_lr,
            "epochs": args.dpo_epochs,
            "steps": Job.objects.get(pk=dpo.job_id).progress_total,
        },
        "dpo_win_rate_over_sft": win_rate(compared, dpo_label),
        "dpo_win_rate_over_sft_calibrated": win_rate(compared, dpo_label, "pairs_calibrated"),
        "exact_match": exact_match(compared),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "load_average": os.getloadavg(),
    }


def report(result: dict[str, Any]) -> None:
    print(f"harvest: {result['harvest_prompts']} prompts, {result['pairs_kept']} pairs kept "
          f"{result['pairs_by_source']} ({result['pairs_valid']} valid), dropped "
          f"{result['pairs_dropped']}; preferring the reference's answer where exactly one "
          f"matches it: {result['pairs_against_references']}")  # fmt: skip
    for label, s in result["harvest_exact_match"].items():
        print(f"  harvest exact match {label}: {s['correct']}/{s['n']} = {s['value']:.1%}")
    print(f"re-evaluation on {result['held_out_prompts']} held-out prompts:")
    for how in ("", "_calibrated"):
        w = result[f"dpo_win_rate_over_sft{how}"]
        if w:
            print(f"  judge's win rate{how.replace('_', ', ')} of SFT+DPO over SFT: "
                  f"{w['win_rate']:.1%} [{w['ci_low']:.1%}, {w['ci_high']:.1%}] (wins "
                  f"{w['wins']}, losses {w['losses']}, ties {w['ties']}, inconsistent "
                  f"{w['inconsistent']}, n {w['n']})")  # fmt: skip
    for label, s in result["exact_match"].items():
        print(f"  exact match {label}: {s['correct']}/{s['n']} = {s['value']:.1%} "
              f"[{s['ci_low']:.1%}, {s['ci_high']:.1%}]")  # fmt: skip
    print("wall time (s): " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--harvest", type=int, default=200, help="training prompts judged")
    p.add_argument("--held-out", type=int, default=200, help="fresh prompts re-evaluated")
    p.add_argument("--save-every", type=int, default=15, help="the SFT's checkpoint interval")
    p.add_argument("--checkpoint", type=int, default=15, help="the SFT checkpoint compared")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--rpo-alpha", type=float, default=1.0, help="bench-dpo's best setting")
    p.add_argument("--dpo-lr", type=float, default=1e-4)
    p.add_argument("--dpo-epochs", type=int, default=2)
    p.add_argument(
        "--strict", action="store_true", help="consistent verdicts only (no calibrated opt-in)"
    )
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-loop-") as data_dir:
        setup_demo(data_dir)
        worker = start_workers()
        try:
            result = loop(args)
        finally:
            worker.terminate()
            worker.wait(30)
    result["seconds"]["total"] = round(time.monotonic() - started, 1)
    report(result)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if any(s != "succeeded" for s in result["statuses"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
