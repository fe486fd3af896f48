"""The evaluation cell run: eval set + candidates + judge from the cell's inputs, then
finetune_core.evaluate.run_evaluation with live progress (phase + counts) into the Job,
results stored in webapp.evaluations' models.

Progress comes through the engine's hooks (workers/reporter.py, with Counts below): a
phase event per candidate's answers and per judging phase, counts per finished batch of
answers or judgments; its should_stop checks the job between batches, and the engine's
Stopped unwinds the library call cleanly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings

from finetune_core.contracts.hooks import Stopped
from finetune_core.contracts.layout import TRAINER_STATE, checkpoint_dir
from webapp.core import storage
from webapp.datasets.models import DatasetVersion
from webapp.evaluations.crypto import KeyUnreadable, decrypt
from webapp.evaluations.models import JUDGE_RATIONALE_TOKENS, JudgeBackend, JudgePrompt
from webapp.evaluations.selectors import egress_policy
from webapp.evaluations.services import evaluation_store
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.run_lifecycle import cell_run_fail, cell_run_settle
from webapp.projects.run_outputs import outputs_of
from webapp.transfers.selectors import latest_succeeded_run
from workers import eval_sets, services_bridge
from workers.finetune_run import UserError, dataset_file
from workers.reporter import Event, Line, Reporter, event
from workers.workspace import fetch_upload, local_copy

log = logging.getLogger(__name__)

# The judge mode "none": no judge, only the reference metrics (exact match, loss).
REFERENCE_ONLY = "reference"
# What an endpoint judge may write when asked for its verdict first ("[[A]]" and a little).
VERDICT_TOKENS = 16


def _latest_adapter_run(cell_id: int) -> CellRun:
    source = latest_succeeded_run(cell_id=cell_id)
    if source is None or not _adapter(source):
        raise UserError("A fine-tuned candidate's cell has no finished run yet; run it first.")
    return source


def _adapter(source: CellRun) -> str | None:
    """The final adapter of a fine-tune or transfer run (an old fine-tune: its folder)."""
    outputs = outputs_of(source)
    return outputs.adapter_dir or outputs.output_dir


def _checkpoint_path(source: CellRun, step: str | int | None) -> str:
    """The adapter (final, or a complete checkpoint's) as a folder on this host."""
    if step in (None, ""):
        return str(local_copy(_adapter(source) or ""))
    folder = checkpoint_dir(outputs_of(source).output_dir, int(step)).as_posix()
    if not storage.exists(storage.join(folder, TRAINER_STATE)):
        raise UserError(f"{source.cell} has no checkpoint at step {step}.")
    return str(local_copy(folder))


def eval_set(inputs: dict[str, Any]) -> Any:
    from finetune_core.evaluate import from_bigbench, from_dataset

    source = inputs["source"]
    if source == "bigbench":
        evalset = from_bigbench(inputs["bigbench_task"])
    elif source == "prompt_dataset":
        version = (
            DatasetVersion.objects.filter(dataset_id=inputs["prompt_dataset"])
            .order_by("-version")
            .first()
        )
        if version is None:
            raise UserError("The prompt dataset has no uploaded file.")
        evalset = eval_sets.prompt_set(
            str(fetch_upload(version.file.name))
        )  # what its validation read
    else:
        version, path = dataset_file(inputs)
        split = {"val_fraction": 0.1, "seed": 0}
        if inputs.get("checkpoints_of"):  # the very split the fine-tune validated on
            config = outputs_of(_latest_adapter_run(inputs["checkpoints_of"])).config or {}
            split = {k: config.get(k, v) for k, v in split.items()}
        evalset = from_dataset(path, fmt=version.format or None, **split)
    if not len(evalset):
        raise UserError("The eval set has no prompts (is the validation split empty?).")
    return evalset.head(int(inputs.get("max_prompts") or 20))


def _backend(pk: int, team_id: int) -> JudgeBackend:
    backend = JudgeBackend.objects.filter(pk=pk, team_id=team_id).first()
    if backend is None:
        raise UserError("An endpoint this evaluation uses was deleted.")
    return backend


def candidates(
    inputs: dict[str, Any], team_id: int
) -> tuple[list[Any], dict[str, Any], dict[str, list[str]]]:
    """The candidates; for checkpoints_of: {"run_id", "base", "steps": {label: step}}; and
    the runs whose adapters they are, {run id: labels} (the lineage's last link)."""
    from finetune_core.evaluate import Candidate

    out: list[Any] = []
    sources: list[tuple[Any, int]] = []  # (adapter candidate, the run it comes from)
    for key in ("base_model", "base_model_2"):
        if inputs.get(key):
            out.append(Candidate("base", inputs[key], label=f"{inputs[key]} (base)"))
    for cell_key, step_key in (("adapter_cell", "checkpoint"), ("adapter_cell_2", "checkpoint_2")):
        if inputs.get(cell_key):
            source = _latest_adapter_run(inputs[cell_key])
            step = (inputs.get(step_key) or "").strip()
            label = f"{source.cell} v{source.version}" + (f" @{step}" if step else "")
            path = _checkpoint_path(source, step)
            out.append(Candidate("adapter", source.inputs["base_model"], adapter=path, label=label))
            sources.append((out[-1], source.pk))
    checkpoints: dict[str, Any] = {}
    if inputs.get("checkpoints_of"):
        source = _latest_adapter_run(inputs["checkpoints_of"])
        steps = [c["step"] for c in outputs_of(source).checkpoints]
        checkpoints = {"run_id": source.pk, "base": out[0].label if out else "", "steps": {}}
        for step in steps:
            label = f"{source.cell} v{source.version} @{step}"
            path = _checkpoint_path(source, step)
            out.append(Candidate("adapter", source.inputs["base_model"], adapter=path, label=label))
            sources.append((out[-1], source.pk))
            checkpoints["steps"][label] = step
    for key in ("endpoint", "endpoint_2"):
        if inputs.get(key):
            b = _backend(inputs[key], team_id)
            secret = decrypt(b.api_key_encrypted) or "none"
            out.append(
                Candidate("openai", b.model, base_url=b.base_url, api_key=secret, label=b.name)
            )
    seen: dict[str, int] = {}
    for c in out:  # the same model twice: keep labels unique
        seen[c.label] = seen.get(c.label, 0) + 1
        if seen[c.label] > 1:
            c.label = f"{c.label} #{seen[c.label]}"
    compared: dict[str, list[str]] = {}
    for c, run_id in sources:  # the labels as made unique above
        compared.setdefault(str(run_id), []).append(c.label)
    return out, checkpoints, compared


def _judge_row(inputs: dict[str, Any]) -> JudgeBackend | None:
    return (
        JudgeBackend.objects.filter(pk=inputs.get("judge")).first() if inputs.get("judge") else None
    )


def _templates(project_id: int) -> dict[str, Any]:
    """The project's latest judge prompt of each kind, as library templates."""
    from finetune_core.evaluate import PromptTemplate

    out = {}
    for p in JudgePrompt.objects.filter(project_id=project_id).order_by("kind", "-version"):
        if p.kind not in out:
            base = "pairwise" if p.kind.startswith("pairwise") else "single"
            out[p.kind] = PromptTemplate(p.label, base, p.system, p.user)
    return out


def judge(inputs: dict[str, Any], team_id: int, project_id: int, pool: Any) -> Any:
    import finetune_core.evaluate as fe

    budget = fe.Budget(max_cost=inputs.get("budget"))
    if inputs.get("judge"):
        b = _backend(inputs["judge"], team_id)
        budget.price_prompt_1k, budget.price_completion_1k = (
            b.price_prompt_1k,
            b.price_completion_1k,
        )
        backend: Any = fe.Endpoint(
            b.base_url,
            b.model,
            decrypt(b.api_key_encrypted) or "none",
            concurrency=int(inputs.get("concurrency") or 4),
            budget=budget,
            egress=egress_policy(),
        )
    else:
        model = inputs.get("judge_model") or inputs.get("base_model")
        backend = fe.LocalBackend(pool.get(model), budget=budget)
    t = _templates(project_id)
    rationale = inputs.get("judge_max_tokens")
    rationale = JUDGE_RATIONALE_TOKENS if rationale in (None, "") else int(rationale)
    return fe.Judge(
        backend,
        # 0: verdict first, no rationale; an endpoint judge still writes its verdict's tokens.
        max_tokens=rationale or VERDICT_TOKENS,
        verdict_first=rationale == 0,
        use_reference=inputs.get("judge_mode") != "pairwise",
        pair_templates=(t.get("pairwise", fe.PAIRWISE), t.get("pairwise-reference", fe.PAIRWISE_REFERENCE)),
        single_templates=(t.get("single", fe.SINGLE), t.get("single-reference", fe.SINGLE_REFERENCE)),
    )  # fmt: skip


def proposal(result: dict[str, Any], checkpoints: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint with the best win rate against the base (a = base in every pair)."""
    rows = [
        p
        for p in result.get("pairs", [])
        if p["a"] == checkpoints.get("base") and p["b"] in checkpoints.get("steps", {})
    ]
    rows = [p for p in rows if p["win_rate"] is not None]
    if not rows:
        return None
    best = max(rows, key=lambda p: (1 - p["win_rate"], checkpoints["steps"][p["b"]]))
    return {
        "run_id": checkpoints["run_id"],
        "step": checkpoints["steps"][best["b"]],
        "label": best["b"],
        "win_rate": 1 - best["win_rate"],
        "ci_low": 1 - best["ci_high"],
        "ci_high": 1 - best["ci_low"],
    }


def describe(name: str, info: dict[str, Any]) -> str:
    """A phase as the run page's event line."""
    if name == "answers":
        return f"{info['candidate']}: {info['cached']} cached, {info['uncached']} to generate"
    if name in ("judging", "grading"):
        what = "judging pairs in both orders" if name == "judging" else "grading answers"
        return f"{what}: {info['judgments']} judgments"
    return "reference metrics" if name == "metrics" else name


class Counts:
    """Answers over all candidates and judgments over all judging phases, for the job's bar
    (the Reporter calls these under its lock: endpoints answer in threads).

    The totals start as the runner's expectation, so the bar never moves backwards, and
    become the engine's own counts as each phase starts."""

    def __init__(self, answers: int, judgments: int) -> None:
        self.answers_total, self.judgments_total = answers, judgments
        self.answers_done = self.judgments_done = 0
        self.judged_before = 0  # judgments of an earlier judging phase
        self.phase = "answers"

    def start(self, name: str, info: dict[str, Any]) -> Event:
        """Hooks.phase: the phase's job event."""
        self.phase = name
        if name in ("judging", "grading"):
            self.judged_before = self.judgments_done
            self.judgments_total = self.judged_before + info["judgments"]
        return event(describe(name, info)[:500], {"kind": "eval_phase", "phase": name, **info})

    def update(self, phase: str, current: int, total: int | None, info: dict[str, Any]) -> Line:
        """Hooks.progress: answers over all candidates, or judgments of this phase."""
        if phase == "answers":
            self.answers_done, self.answers_total = current, total or self.answers_total
        else:
            self.judgments_done = self.judged_before + current
        return self.line()

    def line(self) -> Line:
        count = f"{self.answers_done}/{self.answers_total} answers"
        if self.judgments_total:
            count += f", {self.judgments_done}/{self.judgments_total} judgments"
        return Line(
            self.answers_done + self.judgments_done,
            self.answers_total + self.judgments_total,
            f"{self.phase}: {count}",
            metrics={
                "phase": self.phase,
                "answers_done": self.answers_done,
                "answers_total": self.answers_total,
                "judgments_done": self.judgments_done,
                "judgments_total": self.judgments_total,
            },
        )


def run_evaluation_cell(run: CellRun, job_id: int, task_id: str) -> None:
    """Evaluate; settles the CellRun and the Job whatever happens."""
    from finetune_core.evaluate import AnswerCache, Decoding, ModelPool, run_evaluation

    inputs = run.inputs
    cell = Cell.objects.select_related("project").get(pk=run.cell_id)
    try:
        evalset = eval_set(inputs)
        cands, checkpoints, compared = candidates(inputs, cell.project.team_id)
        mode = {"single": "single", "none": REFERENCE_ONLY}.get(inputs.get("judge_mode") or "")
        mode = mode or "pairwise"
        if mode == REFERENCE_ONLY and not any(it.references for it in evalset):
            raise UserError(
                "No judge and no reference answers: nothing to score. Choose a judge mode, "
                "or prompts with references (a dataset cell, or a BIG-bench task)."
            )
        baseline = checkpoints.get("base") or None
        n_pairs = len(cands) - 1 if baseline else len(cands) * (len(cands) - 1) // 2
        # The expected totals, so the bar's total is right from the start.
        judgments = len(evalset) * (len(cands) if mode == "single" else 2 * n_pairs)
        judgments = 0 if mode == REFERENCE_ONLY else judgments
        counts = Counts(len(evalset) * len(cands), judgments)
        progress = Reporter(job_id, task_id, line=counts.update, phase=counts.start)
        if progress.should_stop():  # cancelled while queued: load and call nothing
            raise Stopped("start")
        progress.write(counts.line())
        pool = ModelPool(quantization=inputs.get("quantization") or "nf4")
        the_judge = (
            None
            if mode == REFERENCE_ONLY
            else judge(inputs, cell.project.team_id, cell.project_id, pool)
        )
        cache = AnswerCache(Path(settings.DATA_DIR) / "eval" / "answers.sqlite")
        result = run_evaluation(
            evalset,
            cands,
            judge=the_judge,
            mode=mode,
            baseline=baseline,
            decoding=Decoding(max_new_tokens=int(inputs.get("max_new_tokens") or 128)),
            cache=cache,
            pool=pool,
            hooks=progress.hooks(),
            endpoint_options={"egress": egress_policy()},  # the engine reads no settings
        )
        if result.get("judge"):  # name the backend as the user knows it, not its class
            result["judge"]["backend"] = (
                f"endpoint {b.name}" if (b := _judge_row(inputs)) else "local"
            )
        counts.phase = "storing results"
        progress.write(counts.line())  # the last counts, past the throttle
        if checkpoints:
            result["proposal"] = proposal(result, checkpoints)
        result["errors"] = _errors(result)
        # The judge prompts' texts, so the project's prompt editor can start from them.
        if the_judge is not None:
            result["templates"] = {
                t.version: {"name": t.name, "system": t.system, "user": t.user}
                for t in (*the_judge.pair_templates, *the_judge.single_templates)
            }
        ev = evaluation_store(run=run, result=result, mode=mode)
    except Stopped:
        cell_run_settle(run=run, outcome=RunStatus.CANCELLED, outputs={"error": "Cancelled."})
        return
    except (UserError, KeyUnreadable) as exc:
        cell_run_fail(run=run, error=str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        user = services_bridge.is_user_error(exc)
        if not user:
            log.exception("evaluation run %s failed", run.pk)
        cell_run_fail(run=run, error=str(exc) if user else f"{type(exc).__name__}: {exc}")
        return
    outputs = {
        "evaluation_id": ev.pk,
        "n_prompts": len(result["items"]),
        "candidates": [c["label"] for c in result["candidates"]],
        "candidate_runs": compared,
        "proposal": result.get("proposal"),
        "errors": len(result["errors"]),
    }
    cell_run_settle(run=run, outcome=RunStatus.SUCCEEDED, outputs=outputs, result=outputs)


def _errors(result: dict[str, Any]) -> list[str]:
    """Answers and judgments that failed, one line each: recorded, never dropped."""
    errors = [
        f"answer {label} / {item}: {a['status']} {a['error']}".strip()
        for label, by in result.get("answers", {}).items()
        for item, a in by.items()
        if a["status"] != "ok"
    ]
    for j in result.get("judgments", []):
        for order in ("ab", "ba"):
            if j[order]["status"] != "ok":
                what = j[order]["error"] or j[order]["status"]
                errors.append(f"judge {j['a']} vs {j['b']} / {j['item_id']} ({order}): {what}")
    return errors[:500]
