"""Write the built-in templates as editable rows, and the standard recall plan."""

from django.db import migrations


def forwards(apps, schema_editor):
    from reminders.templating import DEFAULTS

    MessageTemplate = apps.get_model("reminders", "MessageTemplate")
    OutreachPlan = apps.get_model("reminders", "OutreachPlan")
    for (kind, channel, language), (subject, body) in DEFAULTS.items():
        MessageTemplate.objects.get_or_create(
            kind=kind,
            channel=channel,
            language=language,
            location=None,
            defaults={"subject": subject, "body": body},
        )
    OutreachPlan.objects.get_or_create(
        name="Standard recall",
        defaults={
            "steps": [
                {"days": -14, "channel": "email"},
                {"days": 0, "channel": "sms"},
                {"days": 14, "channel": "sms"},
            ]
        },
    )


class Migration(migrations.Migration):
    dependencies = [("reminders", "0003_schedules_plans_templates")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
