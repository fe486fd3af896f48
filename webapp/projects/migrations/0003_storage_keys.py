"""Run outputs name folders by storage key (`runs/12/adapter`), not by the web host's path.

Rows written before held absolute paths under DATA_DIR (run folders) and MEDIA_ROOT (the
training data); they become keys under those roots. A path under neither is left as it was
(the run page then shows no files for it, as for any run whose files are gone).
"""

from pathlib import Path

from django.conf import settings
from django.db import migrations

from webapp.core.storage import key_for_path

FOLDERS = ("output_dir", "adapter_dir")
CONFIG_FILES = ("data", "val_data", "output_dir")


def _convert(outputs: dict) -> dict:
    data_dir, media = [Path(settings.DATA_DIR)], [Path(settings.MEDIA_ROOT)]
    out = dict(outputs)
    for name in FOLDERS:
        if isinstance(out.get(name), str):
            out[name] = key_for_path(out[name], data_dir)
    config = dict(out.get("config") or {})
    for name in CONFIG_FILES:
        if isinstance(config.get(name), str):
            roots = data_dir if name == "output_dir" else media
            config[name] = key_for_path(config[name], roots)
    if config:
        out["config"] = config
    for part in ("report", "source"):  # a transfer's adapter, and the adapter it moved
        if isinstance(out.get(part), dict) and isinstance(out[part].get("adapter"), str):
            out[part] = {**out[part], "adapter": key_for_path(out[part]["adapter"], data_dir)}
    return out


def to_keys(apps, schema_editor) -> None:  # noqa: ANN001 - migration signature
    CellRun = apps.get_model("projects", "CellRun")
    for run in CellRun.objects.only("pk", "outputs").iterator():
        converted = _convert(run.outputs or {})
        if converted != run.outputs:
            CellRun.objects.filter(pk=run.pk).update(outputs=converted)
    ChatCompletion = apps.get_model("api", "ChatCompletion")
    for row in ChatCompletion.objects.exclude(adapter_dir="").only("pk", "adapter_dir"):
        key = key_for_path(row.adapter_dir, [Path(settings.DATA_DIR)])
        if key != row.adapter_dir:
            ChatCompletion.objects.filter(pk=row.pk).update(adapter_dir=key)


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0002_cell_version"),
        ("api", "0004_chat_top_p_seed_stop"),  # after the backfill that read manifests by path
    ]

    operations = [migrations.RunPython(to_keys, migrations.RunPython.noop)]
