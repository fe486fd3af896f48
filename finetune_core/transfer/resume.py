"""Resume: an attempt that stopped (a cancel, a crash, a worker restart) leaves its
finished phases in the output folder; the next attempt there with the same settings
reuses them instead of sampling, answering, training and evaluating again.

    attempt.json                 the settings of the attempts that wrote this folder
    synthesis.json               accepted (and rejected) inputs; a stopped one continues
    synthesis_unfiltered.json    the same for the unfiltered ablation
    teacher.json                 the teacher's answers and how sure it was of each
    accuracy.json                every model evaluated so far
    <student>/manifest.json      a finished student; checkpoints/ of an unfinished one

Settings that differ make the earlier files stale: they are removed, never mixed in.
When only the students' settings differ, only the students (and their scores) go.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import ADAPTER, MANIFEST
from finetune_core.transfer.sampling import SamplingResult

ATTEMPT = "attempt.json"
PHASE_FILES = (
    "synthesis.json",
    "synthesis_unfiltered.json",
    "teacher.json",
    "accuracy.json",
    "phases.json",
    "partial.json",
    "report.json",
)
STUDENTS = ("transferred", "ablation_unfiltered", "ablation_seeds_only")
STUDENT_PHASES = tuple(f"{p}_{n}" for n in STUDENTS for p in ("train", "eval"))
# TransferConfig fields that only the students' training depends on.
STUDENT_SETTINGS = (
    "include_seeds",
    "teacher_keep",
    "distillation",
    "logit_alpha",
    "logit_temperature",
    "epochs",
    "max_steps",
    "learning_rate",
    "lora_r",
    "target_modules",
    "batch_size",
    "max_length",
)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or cut short by a crash: not reusable
        return None


def write_json(path: Path, data: Any) -> None:
    """Whole or not at all: a crash mid-write must not leave a file that reads as done."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    tmp.replace(path)


class Saved:
    """The phases an earlier attempt in `out` finished; empty unless `resume` and the
    settings match. Settings of the students alone (epochs, learning rate, ...) keep the
    synthetic inputs, the teacher's answers and the base scores, and retrain the students.
    `reused` names what was taken over, for the report."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool) -> None:
        self.out = out
        settings = json.loads(json.dumps(settings))  # tuples as lists, as read back
        shared = {k: v for k, v in settings.items() if k not in STUDENT_SETTINGS}
        student = {k: v for k, v in settings.items() if k in STUDENT_SETTINGS}
        earlier = read_json(out / ATTEMPT) if resume else None
        self.active = isinstance(earlier, dict) and earlier.get("shared") == shared
        self.students_active = self.active and earlier.get("student") == student
        if not self.active:
            for name in PHASE_FILES:
                (out / name).unlink(missing_ok=True)
        if not self.students_active:
            self._forget_students()
        attempts = earlier.get("attempts", 1) + 1 if self.active else 1
        write_json(out / ATTEMPT, {"shared": shared, "student": student, "attempts": attempts})
        self.attempts = attempts
        self.reused: list[str] = []

    def _forget_students(self) -> None:
        """Students trained with other settings: their folders, scores and times go."""
        for name in STUDENTS:
            shutil.rmtree(self.out / name, ignore_errors=True)
        for file, drop in (("accuracy.json", STUDENTS), ("phases.json", STUDENT_PHASES)):
            data = read_json(self.out / file)
            if isinstance(data, dict):
                write_json(self.out / file, {k: v for k, v in data.items() if k not in drop})
        for name in ("partial.json", "report.json"):
            (self.out / name).unlink(missing_ok=True)

    def _load(self, name: str) -> Any:
        return read_json(self.out / name) if self.active else None

    def sampling(self, key: str) -> SamplingResult | None:
        data = self._load(f"{key}.json")
        if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            return None
        return SamplingResult(
            accepted=list(data["inputs"]),
            attempts=int(data["attempts"]),
            empty=int(data["empty"]),
            duplicates=int(data["duplicates"]),
            rejected=int(data["rejected_by_discriminator"]),
            rejected_samples=list(data.get("rejected_inputs", [])),
            filtered=bool(data["filtered"]),
            budget=int(data["budget"]),
            stopped=bool(data["stopped"]),
            max_new_tokens=int(data.get("max_new_tokens", 0)),
        )

    def save_sampling(self, key: str, result: SamplingResult) -> None:
        data = {"inputs": result.accepted, "rejected_inputs": result.rejected_samples}
        write_json(self.out / f"{key}.json", data | result.to_dict())

    def teacher(self) -> tuple[list[str], list[str]] | None:
        data = self._load("teacher.json")
        if not isinstance(data, dict):
            return None
        return list(data["main"]), list(data["extra"])

    def save_teacher(
        self, main: list[str], extra: list[str], confidence: dict[str, list[float]]
    ) -> None:
        data = {"main": main, "extra": extra, "confidence": confidence}
        write_json(self.out / "teacher.json", data)

    def confidence(self) -> dict[str, list[float]] | None:
        data = self._load("teacher.json")
        return data.get("confidence") if isinstance(data, dict) else None

    def save_confidence(self, confidence: dict[str, list[float]]) -> None:
        data = read_json(self.out / "teacher.json")
        write_json(self.out / "teacher.json", data | {"confidence": confidence})

    def accuracy(self) -> dict[str, Any]:
        data = self._load("accuracy.json")
        return data if isinstance(data, dict) else {}

    def save_accuracy(self, accuracy: dict[str, Any]) -> None:
        write_json(self.out / "accuracy.json", accuracy)

    def times(self) -> dict[str, float]:
        data = self._load("phases.json")
        return data if isinstance(data, dict) else {}

    def save_times(self, times: dict[str, float]) -> None:
        write_json(self.out / "phases.json", times)

    def student(self, name: str) -> Path | None:
        """A student that finished training: its adapter folder."""
        folder = self.out / name
        done = self.students_active and (folder / MANIFEST).is_file()
        return folder / ADAPTER if done and (folder / ADAPTER).is_dir() else None

    def student_started(self, name: str) -> bool:
        """An unfinished student with checkpoints: training continues from the latest."""
        from finetune_core.train.checkpoint import list_checkpoints

        return self.students_active and bool(list_checkpoints(self.out / name))
