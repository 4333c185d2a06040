"""A run abandoned by its worker says so in `stop_reason`, not only in the words of
its error message: the metrics count reaped runs by it."""

from django.db import migrations, models

ABANDONED_PREFIX = "Abandoned:"


def mark_abandoned_runs(apps, schema_editor):
    SyncRun = apps.get_model("sabito_sync", "SyncRun")
    SyncRun.objects.filter(status="failed", error_message__startswith=ABANDONED_PREFIX).update(stop_reason="abandoned")


def unmark_abandoned_runs(apps, schema_editor):
    SyncRun = apps.get_model("sabito_sync", "SyncRun")
    SyncRun.objects.filter(stop_reason="abandoned").update(stop_reason="")


class Migration(migrations.Migration):
    dependencies = [("sabito_sync", "0007_customer_fingerprint")]

    operations = [
        migrations.AlterField(
            model_name="syncrun",
            name="stop_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("shutdown", "Worker shutting down"),
                    ("queued_again", "Queued again after a shutdown"),
                    ("abandoned", "Worker died"),
                ],
                default="",
                max_length=20,
            ),
        ),
        migrations.RunPython(mark_abandoned_runs, unmark_abandoned_runs),
    ]
