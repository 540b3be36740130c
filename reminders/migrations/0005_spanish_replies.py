"""Spanish HELP reply and opt-out confirmation, as editable default rows."""

from django.db import migrations


def forwards(apps, schema_editor):
    from reminders.templating import DEFAULTS

    MessageTemplate = apps.get_model("reminders", "MessageTemplate")
    for kind in ("help_reply", "opt_out_confirmation"):
        subject, body = DEFAULTS[(kind, "sms", "es")]
        MessageTemplate.objects.get_or_create(
            kind=kind,
            channel="sms",
            language="es",
            location=None,
            defaults={"subject": subject, "body": body},
        )


class Migration(migrations.Migration):
    dependencies = [("reminders", "0004_default_templates_and_plan")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
