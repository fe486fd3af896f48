"""Store trained_tokens in the outputs of API runs that succeeded before the worker did.

Job lists read it from the run's outputs instead of opening each run's manifest.json;
runs without a readable manifest keep no value (the API shows null, as before).
"""

from django.db import migrations

from finetune_core.contracts.layout import read_manifest


def backfill(apps, schema_editor) -> None:  # noqa: ANN001 - migration signature
    FineTuningJob = apps.get_model("api", "FineTuningJob")
    CellRun = apps.get_model("projects", "CellRun")
    run_ids = FineTuningJob.objects.filter(
        job__status="succeeded", cell_run__isnull=False
    ).values_list("cell_run_id", flat=True)
    for run in CellRun.objects.filter(pk__in=list(run_ids)).only("pk", "outputs").iterator():
        outputs = run.outputs or {}
        if outputs.get("trained_tokens") is not None:
            continue
        # Rows then held the run folder's path on the shared disk (storage keys came later).
        manifest = read_manifest(outputs.get("output_dir"))
        tokens = manifest.trained_tokens if manifest else None
        if tokens is not None:
            CellRun.objects.filter(pk=run.pk).update(outputs={**outputs, "trained_tokens": tokens})


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0002_idempotent_request"),
        ("jobs", "0002_job_metrics"),
        ("projects", "0001_initial"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
