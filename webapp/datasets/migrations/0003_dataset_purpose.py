from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0002_preview_model"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="purpose",
            field=models.CharField(
                choices=[("training", "Fine-tuning data"), ("evaluation", "Evaluation prompts")],
                default="training",
                max_length=12,
            ),
        ),
    ]
