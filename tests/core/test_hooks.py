"""The engine's one hooks protocol (finetune_core.contracts.hooks): an evaluation on the
tiny model reports its phases and per-batch progress and stops between batches; training
and transfer take the same Hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_core.contracts.hooks import Hooks, Stopped
from finetune_core.data.types import Message
from finetune_core.evaluate import (
    AnswerCache,
    Candidate,
    Decoding,
    EvalSet,
    Judge,
    LocalBackend,
    ModelPool,
    make_item,
    run_evaluation,
)
from finetune_core.train import train
from finetune_core.transfer import TransferStopped
from tests.core.test_train import config


class Recorder:
    """Hooks that write down every call; stop once `stop_after` says so."""

    def __init__(self, stop_after: Any = None) -> None:
        self.phases: list[tuple[str, dict[str, Any]]] = []
        self.progress: list[tuple[str, int, int | None]] = []
        self.infos: list[dict[str, Any]] = []
        self.stop_after = stop_after or (lambda rec: False)

    def hooks(self) -> Hooks:
        return Hooks(
            progress=lambda p, cur, tot, info: (
                self.progress.append((p, cur, tot)),
                self.infos.append(info),
            ),
            should_stop=lambda: self.stop_after(self),
            phase=lambda name, info: self.phases.append((name, info)),
        )

    def counts(self, phase: str) -> list[tuple[int, int | None]]:
        return [(cur, tot) for p, cur, tot in self.progress if p == phase]


def _evaluate(pool: ModelPool, tmp_path: Path, rec: Recorder) -> dict[str, Any]:
    es = EvalSet("five", [make_item([Message("user", f"Say {n}.")]) for n in range(5)])
    cands = [
        Candidate("base", "tiny-llama", label="one"),
        Candidate("base", "tiny-llama", label="two"),  # the same model: all cached
    ]
    return run_evaluation(
        es,
        cands,
        judge=Judge(LocalBackend(pool.get("tiny-llama"), batch_size=4), max_tokens=2),
        mode="both",
        decoding=Decoding(max_new_tokens=2),
        cache=AnswerCache(tmp_path / "answers.sqlite"),
        pool=pool,
        metrics=(),
        n_boot=20,
        answer_batch_size=2,
        hooks=rec.hooks(),
    )


def test_evaluation_reports_phases_and_progress_per_batch(pool: ModelPool, tmp_path) -> None:
    rec = Recorder()
    result = _evaluate(pool, tmp_path, rec)
    assert [name for name, _ in rec.phases] == [
        "answers",
        "answers",
        "metrics",
        "judging",
        "grading",
    ]
    assert rec.phases[0][1] == {"candidate": "one", "cached": 0, "uncached": 5}
    assert rec.phases[1][1] == {"candidate": "two", "cached": 5, "uncached": 0}
    # Batches of 2, 2 and 1 for "one"; "two"'s five cached answers at once.
    assert rec.counts("answers") == [(0, 10), (2, 10), (4, 10), (5, 10), (10, 10)]
    # 5 items x 1 pair x 2 orders, and 5 x 2 grades: judge batches of 4.
    assert rec.phases[3][1] == {"judgments": 10} and rec.phases[4][1] == {"judgments": 10}
    for phase in ("judging", "grading"):
        assert rec.counts(phase) == [(0, 10), (4, 10), (8, 10), (10, 10)]
    assert len(result["judgments"]) == 5 and len(result["grades"]) == 10


def test_should_stop_ends_judging_between_batches(pool: ModelPool, tmp_path) -> None:
    rec = Recorder(stop_after=lambda r: (4, 10) in r.counts("judging"))
    with pytest.raises(Stopped) as stopped:
        _evaluate(pool, tmp_path, rec)
    assert stopped.value.phase == "judging" and stopped.value.partial == {"judgments_done": 4}
    assert rec.counts("judging")[-1] == (4, 10) and not rec.counts("grading")


def test_should_stop_during_answers_caches_nothing_half_done(pool: ModelPool, tmp_path) -> None:
    rec = Recorder(stop_after=lambda r: (2, 10) in r.counts("answers"))
    with pytest.raises(Stopped) as stopped:
        _evaluate(pool, tmp_path, rec)
    assert stopped.value.phase == "answers" and rec.counts("answers")[-1] == (2, 10)
    assert [name for name, _ in rec.phases] == ["answers"]
    # The stopped candidate's first batch is not cached: a candidate's answers land whole.
    assert len(AnswerCache(tmp_path / "answers.sqlite")) == 0
    again = Recorder()
    _evaluate(pool, tmp_path, again)  # and a rerun starts it from scratch
    assert again.phases[0][1]["cached"] == 0


def test_training_takes_the_same_hooks(tmp_path) -> None:
    rec = Recorder(stop_after=lambda r: (2, 6) in r.counts("train"))
    result = train(config(tmp_path, "hooked", max_steps=6), hooks=rec.hooks())
    # Training's cancel path is unchanged: a checkpoint and the "cancelled" result.
    assert result.status == "cancelled" and result.steps == 2
    # info is the ProgressEvent's dict: the CLI's bar and the hooks hear the same events.
    steps = [(i["kind"], cur) for i, (_, cur, _) in zip(rec.infos, rec.progress, strict=True)]
    assert steps[:3] == [("start", 0), ("step", 1), ("step", 2)]
    assert steps[-2:] == [("checkpoint", 2), ("cancelled", 2)]
    assert all(p == "train" and tot == 6 for p, _, tot in rec.progress)
    assert rec.infos[1]["train_loss"] > 0


def test_transfer_stopped_is_the_engines_stopped() -> None:
    from finetune_core.transfer import Hooks as TransferHooks

    assert TransferHooks is Hooks and issubclass(TransferStopped, Stopped)
    stopped = TransferStopped("teacher", {"teacher_answered": 3})
    assert str(stopped) == "stopped during teacher" and stopped.partial["teacher_answered"] == 3
