"""Beside the source adapter, while the customer's data still exists: keep k seeds and
train the discriminator. Everything lands in the run folder:

    <run>/transfer/seeds.jsonl          the k real examples kept
    <run>/discriminator/adapter/        the discriminator LoRA (PEFT folder)
    <run>/discriminator/discriminator.json   task, question, source model, counts
"""

from __future__ import annotations

import gc
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import (
    ADAPTER,
    ADAPTER_CONFIG,
    DISCRIMINATOR_DIR,
    SEEDS_DIR,
)
from finetune_core.data import Example, read_examples, train_val_split
from finetune_core.errors import FinetuneError
from finetune_core.transfer.discriminator import write_discriminator_data, write_info
from finetune_core.transfer.hooks import Hooks, TransferStopped
from finetune_core.transfer.resume import read_json, write_json
from finetune_core.transfer.sampling import item_token_budget, synthesize
from finetune_core.transfer.seeds import save_seeds, select_seeds, task_input

QV = ["q_proj", "v_proj"]  # the paper's LoRA targets


def run_config(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "config.json"
    if not path.exists():
        raise FinetuneError(f"{run} holds no config.json: not a training run folder")
    return json.loads(path.read_text())


def run_splits(run: str | Path) -> tuple[list[Example], list[Example]]:
    """The source run's (train, validation) examples, split exactly as training did."""
    cfg = run_config(run)
    if not cfg.get("data") or not Path(cfg["data"]).exists():
        raise FinetuneError(
            f"the training data of {run} ({cfg.get('data')!r}) is gone: give the examples "
            "explicitly (an eval file for `transfer`)"
        )
    fmt, cmap = cfg.get("data_format"), cfg.get("column_map")
    examples = list(read_examples(cfg["data"], fmt=fmt, column_map=cmap))
    if cfg.get("limit_examples"):
        examples = examples[: cfg["limit_examples"]]
    if cfg.get("val_data"):
        return examples, list(read_examples(cfg["val_data"], fmt=fmt, column_map=cmap))
    return train_val_split(examples, val_fraction=cfg.get("val_fraction", 0.1), seed=cfg["seed"])


def default_task(run: str | Path) -> str:
    return Path(run_config(run).get("data") or "task").stem


def run_adapter(run: str | Path) -> Path:
    adapter = Path(run) / ADAPTER
    if not (adapter / ADAPTER_CONFIG).exists():
        raise FinetuneError(f"no adapter in {run}: train the source adapter first")
    return adapter


@dataclass
class DiscriminatorConfig:
    run: str  # the source training run folder (config.json, adapter/)
    task: str | None = None  # the dataset name asked about; default: the data file's stem
    n_seeds: int = 5
    n_real: int = 100  # real inputs (and as many synthetic ones) to train on
    # Real inputs it never trains on, scored afterwards so a transfer can ask for a
    # stricter filter (TransferConfig.real_recall) once the data is gone.
    n_calibration: int = 100
    # 6 epochs at 1e-3 (138 steps on 200 rows): at 2 epochs and 2e-4 the margins stayed
    # under 1 nat and 3-digit sums scored above real inputs (measured, transfer README).
    epochs: int = 6
    learning_rate: float = 1e-3
    lora_r: int = 8
    batch_size: int = 8
    max_length: int = 256
    # Tokens per synthetic input; None: 1.5 x the longest real input, within [16, 96]
    # (synthetic inputs much longer than real ones teach the discriminator nothing).
    max_new_tokens: int | None = None
    quantization: str = "nf4"
    seed: int = 0
    train_overrides: dict[str, Any] = field(default_factory=dict)


def train_discriminator(
    cfg: DiscriminatorConfig, hooks: Hooks | None = None, resume: bool = False
) -> dict[str, Any]:
    """Keep the seeds, sample synthetic inputs from the source model, train the
    discriminator, then score held-out real inputs with it (`calibration`)."""
    from finetune_core.transfer.discriminator import calibrate

    train_examples, val_examples = run_splits(cfg.run)
    summary = _sample_and_train(cfg, train_examples, hooks, resume)
    trained = set(_real_inputs(train_examples, cfg)[: cfg.n_real])
    held_out = [x for x in _real_inputs([*val_examples, *train_examples], cfg) if x not in trained]
    if held_out[: cfg.n_calibration]:
        started = time.monotonic()
        folder = Path(cfg.run) / DISCRIMINATOR_DIR
        summary["calibration"] = calibrate(folder, held_out[: cfg.n_calibration], cfg.quantization)
        summary["phase_seconds"]["calibrate"] = time.monotonic() - started
    return summary


# The settings that decide the training rows (the real inputs and the source's samples).
ROW_SETTINGS = ("task", "n_seeds", "n_real", "max_new_tokens", "quantization", "seed")


def _rows_of(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: settings.get(k) for k in ROW_SETTINGS}


def _real_inputs(examples: list[Any], cfg: DiscriminatorConfig) -> list[str]:
    inputs = sorted({task_input(e).strip() for e in examples} - {""})
    random.Random(cfg.seed).shuffle(inputs)
    return inputs


def _sample_and_train(
    cfg: DiscriminatorConfig, train_examples: list[Example], hooks: Hooks | None, resume: bool
) -> dict[str, Any]:
    """Keep the seeds, sample synthetic inputs from the source model, train the discriminator.

    `hooks` hear "generate" (source samples) and "train" (discriminator steps) progress;
    stopping raises TransferStopped, leaving the seeds (written first) in place, and the
    training rows and a checkpoint once training began. `resume` reuses those when the
    settings match: an attempt that stopped goes on from its checkpoint."""
    from finetune_core.infer import load_chat_model
    from finetune_core.train.checkpoint import checkpoint_dir

    hooks = hooks or Hooks()
    run = Path(cfg.run)
    source = run_config(run)["model"]
    task = cfg.task or default_task(run)
    times: dict[str, float] = {}

    seeds = select_seeds(train_examples, cfg.n_seeds, seed=cfg.seed)
    seeds_path = save_seeds(seeds, run / SEEDS_DIR)

    inputs = _real_inputs(train_examples, cfg)
    real = inputs[: cfg.n_real]

    folder = run / DISCRIMINATOR_DIR
    data = run / SEEDS_DIR / "discriminator_data.jsonl"
    meta = run / SEEDS_DIR / "discriminator_data.meta.json"
    settings = {k: v for k, v in asdict(cfg).items() if k != "run"} | {"task": task}
    settings = json.loads(json.dumps(settings))
    earlier = read_json(meta) if resume and data.is_file() else None
    if earlier and earlier.get("settings") == settings:
        return _train(cfg, source, task, folder, data, hooks, seeds, seeds_path, earlier, times)
    if earlier and _rows_of(earlier.get("settings") or {}) == _rows_of(settings):
        # Only training settings changed: the rows stay, the training starts again.
        shutil.rmtree(checkpoint_dir(folder, 0).parent, ignore_errors=True)
        write_json(meta, earlier | {"settings": settings})
        return _train(cfg, source, task, folder, data, hooks, seeds, seeds_path, earlier, times)
    # Another attempt's checkpoints are stale; a discriminator already there stays until
    # this one replaces it.
    shutil.rmtree(checkpoint_dir(folder, 0).parent, ignore_errors=True)
    meta.unlink(missing_ok=True)

    started = time.monotonic()
    chat = load_chat_model(source, adapter=str(run_adapter(run)), quantization=cfg.quantization)
    sampled = synthesize(
        chat,
        inputs,
        len(real),
        discriminator=None,
        max_new_tokens=cfg.max_new_tokens
        or item_token_budget(chat.tokenizer, real, factor=1.5, cap=96),
        seed=cfg.seed,
        on_batch=lambda r: hooks.progress(
            "generate", len(r.accepted), len(real), {"attempts": r.attempts}
        ),
        should_stop=hooks.should_stop,
    )
    del chat
    gc.collect()
    if sampled.stopped:
        raise TransferStopped("generate", {"seeds": len(seeds)})
    times["synthesize"] = time.monotonic() - started
    if not sampled.accepted:
        raise FinetuneError("the source model wrote no usable synthetic inputs")

    rows = write_discriminator_data(real, sampled.accepted, task, data, seed=cfg.seed)
    written = {"settings": settings, "rows": rows, "real": len(real)}
    written["synthetic"] = len(sampled.accepted)
    write_json(meta, written)
    return _train(cfg, source, task, folder, data, hooks, seeds, seeds_path, written, times)


def _train(
    cfg: DiscriminatorConfig,
    source: str,
    task: str,
    folder: Path,
    data: Path,
    hooks: Hooks,
    seeds: list[Any],
    seeds_path: Path,
    meta: dict[str, Any],
    times: dict[str, float],
) -> dict[str, Any]:
    """Train on the written rows (from the latest checkpoint if there is one); write the info."""
    from finetune_core.train import TrainConfig, train
    from finetune_core.train.checkpoint import list_checkpoints

    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    run = Path(cfg.run)
    train_cfg = TrainConfig(
        model=source,
        data=str(data),
        data_format="chat",
        output_dir=str(folder),
        quantization=cfg.quantization,  # type: ignore[arg-type]
        target_modules=QV,
        lora_r=cfg.lora_r,
        lora_alpha=2 * cfg.lora_r,
        learning_rate=cfg.learning_rate,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        packing=False,  # one question per row: the verdict must not see another row
        val_fraction=0.1,
        seed=cfg.seed,
        **cfg.train_overrides,
    )
    result = train(
        train_cfg,
        hooks=Hooks(
            progress=lambda _p, step, total, _e: hooks.progress("train", step, total, {}),
            should_stop=hooks.should_stop,
        ),
        resume=bool(list_checkpoints(folder)),
    )
    if result.status == "cancelled":
        raise TransferStopped("train", {"seeds": len(seeds)})
    times["train"] = time.monotonic() - started
    summary = {
        "task": task,
        "source_model": source,
        "source_adapter": str(run_adapter(run)),
        "seeds": len(seeds),
        "seeds_file": str(seeds_path),
        "real": meta["real"],
        "synthetic": meta["synthetic"],
        "rows": meta["rows"],
        "steps": result.steps,
        "train_loss": result.train_loss,
        "val_loss": result.best_val_loss,
        "phase_seconds": times,
    }
    write_info(folder, **summary)
    return summary
