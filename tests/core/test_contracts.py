"""The engine's contracts: torch-free, and every declared bound is the engine's own check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from finetune_core.contracts.settings import settings_of
from finetune_core.contracts.train import (
    PRESETS,
    TrainConfig,
    preset_values,
    resolve_target_modules,
    train_settings,
)
from finetune_core.contracts.transfer import TransferConfig
from finetune_core.errors import FinetuneError


def test_contracts_import_no_torch_or_transformers() -> None:
    code = (
        "import sys, finetune_core.contracts.train, finetune_core.contracts.settings; "
        "import finetune_core.contracts.layout, finetune_core.contracts.hooks; "
        "bad = [m for m in ('torch', 'transformers', 'peft', 'numpy') if m in sys.modules]; "
        "sys.exit(f'loaded: {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout


# A valid config of each kind, to which one setting at a time is changed.
VALID = {
    TrainConfig: {"data": "x.jsonl"},
    TransferConfig: {"run": "runs/1", "target": "gemma-3-270m", "output_dir": "out"},
}


def _out_of_bounds() -> list[tuple[type, str, object, object]]:
    """(config, setting, a value just outside a bound, the bound) for every declared bound."""
    cases = []
    for config in VALID:
        for s in settings_of(config):
            step = 1 if s.kind is int else 1e-9
            if s.minimum is not None:
                cases.append((config, s.name, s.minimum - step, s.kind(s.minimum)))
            if s.maximum is not None:
                cases.append((config, s.name, s.maximum + step, s.kind(s.maximum)))
    return cases


@pytest.mark.parametrize(
    ("config", "name", "bad", "edge"),
    _out_of_bounds(),
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_engine_enforces_each_declared_bound(
    config: type, name: str, bad: object, edge: object
) -> None:
    config(**VALID[config], **{name: edge}).validate()
    with pytest.raises(FinetuneError, match=name):
        config(**VALID[config], **{name: bad}).validate()


@pytest.mark.parametrize("config", list(VALID), ids=lambda c: c.__name__)
def test_engine_enforces_each_declared_choice(config: type) -> None:
    for s in (s for s in settings_of(config) if s.choices):
        for choice in s.choices:
            config(**VALID[config], **{s.name: choice}).validate()
        allowed = f"{', '.join(s.choices[:-1])} or {s.choices[-1]}"
        with pytest.raises(FinetuneError, match=f"{s.name} must be {allowed}, got"):
            config(**VALID[config], **{s.name: "no-such-choice"}).validate()


def test_a_transfer_names_what_it_lacks_and_unknown_ablations() -> None:
    with pytest.raises(FinetuneError, match="run is required; target is required"):
        TransferConfig().validate()
    with pytest.raises(FinetuneError, match="unknown ablation"):
        TransferConfig(**VALID[TransferConfig], ablations=("nope",)).validate()


def test_a_missing_data_file_and_a_non_number_are_named() -> None:
    with pytest.raises(FinetuneError, match="data: a training file is required"):
        TrainConfig().validate()
    with pytest.raises(FinetuneError, match="epochs must be a number"):
        TrainConfig(data="x.jsonl", epochs="2").validate()


def test_defaults_are_the_dataclass_defaults_where_no_preset_sets_them() -> None:
    defaults = TrainConfig()
    for preset in PRESETS:
        values = preset_values(preset)
        for s in train_settings("form"):
            expected = PRESETS[preset].get(s.name, getattr(defaults, s.name))
            assert values[s.name] == expected, (preset, s.name)


def test_target_module_choices_name_their_layers() -> None:
    assert resolve_target_modules("attention") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_target_modules(["q_proj"]) == ["q_proj"]
    assert resolve_target_modules("all-linear") == "all-linear"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('{"reference": "x"}', "no_prompt"),
        ('{"messages": [{"role": "user"}]}', "bad_messages"),
        ('{"prompt": "q", "choices": [1]}', "bad_field"),
    ],
)
def test_prompt_file_errors_carry_a_stable_code_and_line(
    tmp_path: Path, line: str, code: str
) -> None:
    from finetune_core.evaluate import from_prompt_file

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n\n' + line + "\n")
    with pytest.raises(FinetuneError) as caught:
        from_prompt_file(path)
    assert (caught.value.code, caught.value.line) == (code, 3)
    assert str(caught.value) == f"line 3: {caught.value.detail}"
