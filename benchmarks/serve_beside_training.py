"""bench-serve's fine-tune beside the serving process: a LoRA fine-tune of the base in its own
process (the CLI, or with a CPU worker's manners: benchmarks/train_yielding.py), its
steps stamped as they appear in its log, and what each side costs the other."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench_serve_engine import QUESTIONS

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
STEPS_ALONE = 4  # training steps timed before the clients start
STAMP_S = 0.05


def steps_done(text: str) -> int:
    """Optimizer steps the training bar has shown (tqdm rewrites its line with \\r)."""
    return len(re.findall(r"tok_s=", text))


class StepClock(threading.Thread):
    """Stamps each training step as it appears in the log (every STAMP_S)."""

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True)
        self.log, self.stamps, self.running = log, [], True

    def run(self) -> None:
        while self.running:
            done = steps_done(self.log.read_text(errors="replace"))
            self.stamps += [time.monotonic()] * (done - len(self.stamps))
            time.sleep(STAMP_S)

    def rate(self, start: float, end: float) -> float:
        """Steps per second between two instants (each step trains the same packed rows)."""
        return sum(start < t <= end for t in self.stamps) / (end - start)


@contextmanager
def fine_tune(
    env: dict[str, str], tmp: Path, model: str, yielding: bool
) -> Iterator[dict[str, float]]:
    """A LoRA fine-tune of `model` (the CLI, its own process; `yielding`: with a CPU
    worker's manners) training for the block; fills the dict it yields with its steps/s
    alone (its steps before the block, the first one left out: it warms up) and during."""
    data = tmp / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": q}]}
            for q in QUESTIONS] * 20  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp / "train.log"
    program = ["benchmarks.train_yielding"] if yielding else ["finetune_core", "train"]
    cmd = [PY, "-m", *program, "--model", model, "--data", str(data),
           "--output-dir", str(tmp / f"ft-{yielding}"), "--max-steps", "100000",
           "--batch-size", "2", "--max-length", "128",
           "--save-every", "100000", "--eval-every", "100000"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    clock, rates = StepClock(log), {}
    clock.start()
    try:
        deadline = time.monotonic() + 240
        while len(clock.stamps) < STEPS_ALONE + 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the fine-tune did not start:\n{log.read_text()[-2000:]}")
            time.sleep(STAMP_S)
        start = time.monotonic()
        rates["alone"] = STEPS_ALONE / (clock.stamps[STEPS_ALONE] - clock.stamps[0])
        yield rates
        rates["during"] = clock.rate(start, time.monotonic())
    finally:
        clock.running = False
        proc.terminate()
        proc.wait(timeout=30)


def slowdowns(alone: dict[str, Any], beside: dict[str, Any], suffix: str) -> dict[str, Any]:
    """What serving and a fine-tune on the same CPUs cost each other (ratios >= 1: slower;
    None: the fine-tune made no step while the clients were served)."""
    training = beside["training_steps_per_s"]
    paused = training["during"] == 0
    return {
        f"training_slowdown_of_serving{suffix}": round(
            alone["tokens_per_s"] / beside["tokens_per_s"], 2
        ),
        f"serving_slowdown_of_training{suffix}": None
        if paused
        else round(training["alone"] / training["during"], 2),
    }
