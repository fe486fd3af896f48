"""The notebook's form, the /v1 API and the engine's TrainConfig agree on every training
setting: its name, default, bounds and choices all come from finetune_core.contracts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from django import forms

from finetune_core.contracts.settings import API, FORM, Setting
from finetune_core.contracts.train import (
    DEFAULT_PRESET,
    TrainConfig,
    preset_values,
    train_settings,
)
from finetune_core.contracts.transfer import TransferConfig, transfer_settings
from webapp.api.v1.services import EXTRA_ALIASES, EXTRA_KEYS, HYPER, finetune_config
from webapp.projects.cell_kinds import FinetuneForm
from webapp.projects.finetune_config import effective_hparams, train_config_dict
from webapp.transfers.kind import TransferForm

FORM_SETTINGS = train_settings(FORM)


def _bounds(field: forms.Field) -> tuple[float | None, float | None]:
    return getattr(field, "min_value", None), getattr(field, "max_value", None)


@pytest.mark.parametrize("spec", FORM_SETTINGS, ids=lambda s: s.name)
def test_form_field_matches_the_declared_setting(spec: Setting) -> None:
    field = FinetuneForm.base_fields[spec.name]
    assert field.label == spec.title and spec.help in field.help_text
    assert f"Default: {preset_values(DEFAULT_PRESET)[spec.name]}" in field.help_text or (
        preset_values(DEFAULT_PRESET)[spec.name] is None and "Default: none" in field.help_text
    )
    if spec.choices:
        assert [c for c, _ in field.choices] == ["", *spec.choices]
        with pytest.raises(forms.ValidationError):
            field.clean("no-such-choice")
        return
    assert _bounds(field) == (spec.minimum, spec.maximum)
    if spec.minimum is not None:  # the form and the engine refuse the same values
        field.clean(spec.minimum)
        below = spec.minimum - (1 if spec.kind is int else 1e-9)
        with pytest.raises(forms.ValidationError):
            field.clean(below)
        assert spec.problem(below) is not None and spec.problem(spec.kind(spec.minimum)) is None


def test_form_offers_exactly_the_form_settings_and_engine_only_ones_stay_out() -> None:
    declared = {f.name for f in dataclasses.fields(TrainConfig)}
    offered = set(FinetuneForm.base_fields) & declared
    assert offered == {s.name for s in FORM_SETTINGS}
    assert {"grad_clip", "optimizer", "output_dir", "data"}.isdisjoint(offered)


def test_api_names_map_onto_declared_api_settings() -> None:
    api_names = {s.name for s in train_settings(API)}
    assert HYPER == {"beta": "beta", "n_epochs": "epochs", "batch_size": "batch_size"}
    assert set(HYPER.values()) <= api_names
    assert EXTRA_ALIASES == {"rank": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout"}
    assert set(EXTRA_ALIASES.values()) <= api_names
    assert {s.name for s in FORM_SETTINGS} <= EXTRA_KEYS


def test_api_config_becomes_an_engine_config_with_the_same_defaults() -> None:
    config = finetune_config(
        model="tiny-llama",
        hyperparameters={"n_epochs": 3, "batch_size": "auto"},
        extras={"rank": 4, "target_modules": "attention"},
        seed=None,
    )
    engine = TrainConfig(**train_config_dict(config, data_path="d.jsonl", output_dir="out"))
    engine.validate()
    assert (engine.epochs, engine.lora_r) == (3, 4)
    assert engine.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    defaults = preset_values(DEFAULT_PRESET)
    assert engine.batch_size == defaults["batch_size"] == TrainConfig().batch_size
    assert effective_hparams({})["max_length"] == defaults["max_length"] == engine.max_length


@pytest.mark.parametrize("spec", transfer_settings(FORM), ids=lambda s: s.name)
def test_transfer_form_field_matches_the_declared_setting(spec: Setting) -> None:
    field = TransferForm.base_fields[spec.name]
    assert (field.label, field.initial, field.help_text) == (spec.title, spec.default, spec.help)
    if spec.choices:  # the default is shown selected: no blank choice
        assert [c for c, _ in field.choices] == list(spec.choices)
    else:
        assert _bounds(field) == (spec.minimum, spec.maximum)


def test_a_blank_transfer_setting_takes_the_contracts_default(tmp_path, settings) -> None:
    from types import SimpleNamespace

    from workers.transfer_run import transfer_config

    data = Path(settings.MEDIA_ROOT) / "datasets/train.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("{}\n")  # the source's data still exists: its split is the eval set
    outputs = {"output_dir": "runs/1", "config": {"data": "datasets/train.jsonl"}}
    source = SimpleNamespace(outputs=outputs, cell=SimpleNamespace(kind="finetune"))
    inputs = {"base_model": "gemma-3-270m", "eval_limit": "", "epochs": 3, "unfiltered": True}
    inputs |= {"ablation_unfiltered": True, "ablation_seeds_only": True}
    cfg = transfer_config(inputs, source, "adapter", tmp_path / "out", tmp_path)  # type: ignore[arg-type]
    cfg.validate()
    assert (
        cfg.epochs == 3
        and cfg.eval_limit == TransferConfig.__dataclass_fields__["eval_limit"].default
    )
    # Unfiltered as the main run: its ablation would be the same run twice.
    assert cfg.filtered is False and cfg.ablations == ("seeds_only",)
