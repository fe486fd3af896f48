"""Checkpoint uploads as a share of training time (make bench-storage's checkpoint part).

Fine-tunes SmolLM2-135M-Instruct (the product's defaults: NF4 base, LoRA r=16 on every
linear layer, AdamW) on a bundled BIG-bench task in a worker's run space on the bucket
(workers.workspace.open_run_space on STORAGE_URL), and uploads every checkpoint the engine
saves through the worker's own path, RunSpace.publish_checkpoint, inside the training
callback, as workers/finetune_run.py does: training waits while it uploads.

Clocks, from the engine's events: a step's time runs from the previous step's event (or
from the end of the upload that followed it) to its own; the first step (warm-up) is left
out of the mean. The engine's local save is timed apart from the upload. The overhead is

    upload seconds / (mean step seconds * save_every)   (per checkpoint interval)
    upload seconds / mean step seconds                  (in steps: one upload costs this many)

Needs Django set up on an S3 STORAGE_URL (bench_storage does it on moto); nothing downloads:
the model comes from the prepared cache (FINETUNE_CORE_CACHE, the Makefile's .cache).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

MB = 1e6


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def checkpoint_overhead(
    *,
    model: str = "smollm2-135m-instruct",
    steps: int = 10,
    save_every: int = 5,
    batch_size: int = 2,
    max_length: int = 128,
    threads: int | None = None,
) -> dict[str, Any]:
    """Trains `steps` steps, saving (and uploading) every `save_every`; returns the figures."""
    import torch

    from finetune_core.contracts.hooks import Hooks
    from finetune_core.contracts.layout import checkpoint_dir
    from finetune_core.data import bigbench_task_path
    from finetune_core.kernels import ops
    from finetune_core.train import TrainConfig, train
    from webapp.core import storage
    from workers.workspace import open_run_space

    if threads:
        torch.set_num_threads(threads)
    ops.load_extension()  # a first build of the NF4 kernels takes minutes: not in any clock
    space = open_run_space("runs/bench-checkpoints")
    assert space.remote, "the checkpoint part needs an object store (STORAGE_URL=s3://...)"
    cfg = TrainConfig(
        model=model, data=str(bigbench_task_path("sports_understanding")),
        output_dir=str(space.folder), limit_examples=64, val_fraction=0.0,
        batch_size=batch_size, max_length=max_length, max_steps=steps, save_every=save_every,
        eval_every=10**6, seed=0,
    )  # fmt: skip
    marks: dict[str, float] = {}
    step_s: dict[int, float] = {}
    saves: list[dict[str, Any]] = []

    def clock(phase: str, step: int, total: int | None, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event["kind"] == "start":
            marks["from"] = now
        elif event["kind"] == "step":
            step_s[step] = now - marks["from"]
            marks["from"] = marks["step"] = now
        elif event["kind"] == "checkpoint":
            folder = checkpoint_dir(space.folder, step)
            sent = folder_bytes(folder) + sum(
                p.stat().st_size for p in space.folder.iterdir() if p.is_file()
            )  # the run's top-level files go up with each checkpoint
            started = time.perf_counter()
            space.publish_checkpoint(step)  # what the worker does, here, blocking
            upload = time.perf_counter() - started
            saves.append({"step": step, "checkpoint_mb": round(folder_bytes(folder) / MB, 2),
                          "sent_mb": round(sent / MB, 2), "save_s": round(now - marks["step"], 3),
                          "upload_s": round(upload, 3)})  # fmt: skip
            marks["from"] = time.perf_counter()  # the next step starts after the upload

    load = os.getloadavg()[0]
    train(cfg, hooks=Hooks(progress=clock))
    load = max(load, os.getloadavg()[0])  # a shared machine's load stretches every clock
    stored = storage.keys_under(storage.join(space.key, "checkpoints"))
    assert len({k.split("/")[3] for k in stored}) == len(saves), (stored, saves)
    space.close()

    steady = [s for n, s in sorted(step_s.items()) if n > 1]
    step = statistics.mean(steady)
    upload = statistics.mean(s["upload_s"] for s in saves)
    save = statistics.mean(s["save_s"] for s in saves)
    ckpt_mb = statistics.mean(s["checkpoint_mb"] for s in saves)
    return {
        "model": model, "steps": steps, "save_every": save_every, "batch_size": batch_size,
        "max_length": max_length, "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "load_avg_1m": round(load, 2),
        "first_step_s": round(step_s[1], 3), "mean_step_s": round(step, 3),
        "checkpoint_mb": round(ckpt_mb, 2), "mean_save_s": round(save, 3),
        "mean_upload_s": round(upload, 3), "upload_mb_s": round(ckpt_mb / upload, 1),
        "upload_over_interval": round(upload / (step * save_every), 4),
        "upload_over_step": round(upload / step, 4),
        "save_over_interval": round(save / (step * save_every), 4),
        "checkpoints": saves,
    }  # fmt: skip


def print_overhead(r: dict[str, Any]) -> None:
    print(
        f"checkpoint uploads, {r['model']} on {r['device']} ({r['threads']} threads, load "
        f"average up to {r['load_avg_1m']}), "
        f"{r['steps']} steps of batch {r['batch_size']} x {r['max_length']} tokens, "
        f"saving every {r['save_every']}:"
    )
    print(f"  mean step {r['mean_step_s']:.3f} s (first step {r['first_step_s']:.3f} s, left out)")
    for c in r["checkpoints"]:
        print(
            f"  step {c['step']:>4}: checkpoint {c['checkpoint_mb']:.1f} MB ({c['sent_mb']:.1f} MB "
            f"sent), local save {c['save_s']:.3f} s, upload {c['upload_s']:.3f} s"
        )
    print(
        f"  upload / (step x save_every) = {r['upload_over_interval']:.3f}  "
        f"(upload / one step = {r['upload_over_step']:.3f}; local save / interval "
        f"= {r['save_over_interval']:.3f}; {r['upload_mb_s']} MB/s)"
    )
