from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0002_job_metrics"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="deliveries",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
