"""A version's format is the engine's format name (chat, preference, ...), not the file's
container: "jsonl" and "json" named no format the engine reads, so a version that asked for
one becomes "detect", which is what reading it needs; where validation found the engine's
format, it is kept."""

from typing import Any

from django.db import migrations, models


def containers_to_detect(apps: Any, schema_editor: Any) -> None:
    Version = apps.get_model("datasets", "DatasetVersion")
    for version in Version.objects.filter(format__in=["jsonl", "json"]).iterator():
        found = (version.report or {}).get("format")
        known = found in ("chat", "prompt_completion", "alpaca", "bigbench", "preference")
        version.format = found if known else ""
        version.save(update_fields=["format"])


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0004_version_origin"),
    ]

    operations = [
        migrations.AlterField(
            model_name="datasetversion",
            name="format",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "Detect from file"),
                    ("chat", "Chat messages (JSONL)"),
                    ("prompt_completion", "Prompt and completion (JSONL)"),
                    ("alpaca", "Alpaca instructions (JSON or JSONL)"),
                    ("bigbench", "BIG-bench task (JSON)"),
                    ("csv", "CSV"),
                    ("preference", "Preference pairs (JSONL)"),
                ],
                max_length=20,
            ),
        ),
        migrations.RunPython(containers_to_detect, migrations.RunPython.noop),
    ]
