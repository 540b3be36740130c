"""The audit trail: what is registered, the system actor, and audited bulk writes.

django-auditlog records saves and deletes through model signals. QuerySet.update()
and bulk_create() send no signals, so every bulk write to an audited model goes
through `bulk_create_audited` / `update_audited` below, which write the same
entries the signals would have written — with the actor and address of the
current request or task.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from auditlog.cid import get_cid
from auditlog.context import auditlog_value, set_actor
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.encoding import smart_str

M = TypeVar("M", bound=models.Model)


def register_models() -> None:
    """Register every model whose changes must be in the trail (called from AppConfig)."""
    from guardian.models import UserObjectPermission

    from followups.models import CadenceRule, ContactAttempt, Discharge, Followup, FollowupType
    from imports.models import ImportSource
    from locations.models import Location, LocationGrant
    from patients.models import (
        Appointment,
        AppointmentType,
        ChannelConsent,
        ExternalIdentifier,
        Household,
        Patient,
        Provider,
    )
    from reminders.models import MessageTemplate, OutreachPlan, ReminderSchedule

    auditlog.register(Location)
    auditlog.register(LocationGrant)
    auditlog.register(UserObjectPermission)
    auditlog.register(
        get_user_model(),
        m2m_fields={"groups", "user_permissions"},
        exclude_fields=["last_login"],
        mask_fields=["password"],
    )
    auditlog.register(Household)
    auditlog.register(Patient, m2m_fields={"shared_with"}, exclude_fields=["updated_at"])
    auditlog.register(ChannelConsent)
    auditlog.register(ExternalIdentifier)
    auditlog.register(AppointmentType)
    auditlog.register(Provider, m2m_fields={"locations"})
    auditlog.register(Appointment, exclude_fields=["updated_at"])
    auditlog.register(FollowupType)
    auditlog.register(CadenceRule, m2m_fields={"trigger_types", "satisfying_types", "locations"})
    auditlog.register(Discharge)
    auditlog.register(Followup, exclude_fields=["updated_at"])
    auditlog.register(ContactAttempt)
    # Reminder configuration is audited; the outbox itself is its own record.
    auditlog.register(ReminderSchedule, exclude_fields=["updated_at"])
    auditlog.register(OutreachPlan, exclude_fields=["updated_at"])
    auditlog.register(MessageTemplate, exclude_fields=["updated_at"])
    auditlog.register(ImportSource)


def get_system_user():
    """The inactive account that background work is recorded under."""
    user, _ = get_user_model().objects.get_or_create(
        username=settings.SYSTEM_ACTOR_USERNAME,
        defaults={"is_active": False, "first_name": "System", "last_name": "(automatic)"},
    )
    return user


@contextmanager
def system_actor(*, replace: bool = False) -> Iterator[None]:
    """Record writes inside the block as done by the system account.

    An actor already set (a request's user) is kept unless `replace` is true.
    """
    current = auditlog_value.get({})
    keep = not replace and current.get("actor") is not None
    # Looked up (and on first use created) while the caller's context is intact:
    # auditlog's receivers of an enclosing request expect their own context value.
    system = None if keep else get_system_user()
    # auditlog's set_actor() leaves its value in the context variable when its
    # block ends, but no longer attaches it to entries. Restoring the variable on
    # the way out keeps that stale actor from passing for a live one in the next
    # task of the same worker, whose writes would then be recorded with no actor.
    token = auditlog_value.set({} if replace else current)
    try:
        if keep:
            yield
        else:
            with set_actor(system):
                yield
    finally:
        auditlog_value.reset(token)


def _current_context() -> dict[str, Any]:
    try:
        value = auditlog_value.get()
    except LookupError:
        return {}
    actor = value.get("actor")
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return {"actor": actor, "remote_addr": value.get("remote_addr")}


def _json_changes() -> bool:
    # The form auditlog's own signals store values in ("None" or None, "5" or 5),
    # so bulk entries read exactly like the single-save entries around them.
    return getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False)


def _entry(instance: models.Model, action: int, changes: dict | None) -> LogEntry:
    ctx = _current_context()
    actor = ctx.get("actor")
    get_additional = getattr(instance, "get_additional_data", None)
    return LogEntry(
        content_type=ContentType.objects.get_for_model(instance),
        object_pk=str(instance.pk),
        object_id=instance.pk if isinstance(instance.pk, int) else None,
        object_repr=smart_str(instance)[:2000],
        action=action,
        changes=changes,
        actor=actor,
        actor_email=getattr(actor, "email", None) if actor else None,
        remote_addr=ctx.get("remote_addr"),
        additional_data=get_additional() if callable(get_additional) else None,
        cid=get_cid(),
        timestamp=timezone.now(),
    )


@transaction.atomic
def bulk_create_audited(model: type[M], objs: Sequence[M], *, batch_size: int = 1000) -> list[M]:
    """bulk_create plus one CREATE audit entry per row, in the same transaction."""
    created = model._default_manager.bulk_create(objs, batch_size=batch_size)
    if auditlog.contains(model) and created:
        _write_entries(
            _entry(obj, LogEntry.Action.CREATE, changes)
            for obj, changes in zip(created, _create_diffs(model, created), strict=True)
        )
    return created


def _write_entries(entries: Iterable[LogEntry]) -> None:
    """Insert audit entries: with COPY on PostgreSQL (three times faster than INSERT
    for the 100,000 entries of a big import), bulk_create elsewhere."""
    # Built in full first: building one may query (a related row's id for its
    # additional data), and a connection in COPY mode can run nothing else.
    entries = list(entries)
    if connection.vendor != "postgresql":
        LogEntry.objects.bulk_create(entries, batch_size=1000)
        return
    fields = [f for f in LogEntry._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {connection.ops.quote_name(LogEntry._meta.db_table)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for entry in entries:
            copy.write_row(
                [f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields]
            )


def _create_diffs(model: type[M], objs: Sequence[M]) -> Iterator[dict | None]:
    """What auditlog's model_instance_diff(None, obj) gives, for many new rows at once.

    The field list, its include/exclude filtering and the "before" values (all of
    a row that did not exist) are worked out once rather than per row — the
    import of 100,000 patients spends its time here otherwise. A test checks the
    result equals model_instance_diff's for every registered model.
    """
    from auditlog.diff import get_field_value, get_fields_in_model, get_mask_function, is_primitive

    use_json = _json_changes()
    rules = auditlog.get_model_fields(model)
    fields = get_fields_in_model(objs[0])
    if rules["include_fields"]:
        fields = [f for f in fields if f.name in rules["include_fields"]]
    if rules["exclude_fields"]:
        fields = [f for f in fields if f.name not in rules["exclude_fields"]]
    before = {f.name: get_field_value(None, f, use_json) for f in fields}
    masked = {f.name for f in fields if f.name in rules["mask_fields"]}
    mask = get_mask_function(rules.get("mask_callable")) if masked else None
    for obj in objs:
        diff = {}
        for field in fields:
            old, new = before[field.name], get_field_value(obj, field, use_json)
            if old == new:
                continue
            if mask is not None and field.name in masked:
                diff[field.name] = (mask(smart_str(old)), mask(smart_str(new)))
            elif not use_json:
                diff[field.name] = (smart_str(old), smart_str(new))
            else:
                diff[field.name] = (
                    old if is_primitive(old) else smart_str(old),
                    new if is_primitive(new) else smart_str(new),
                )
        yield diff or None


@transaction.atomic
def update_audited(queryset: models.QuerySet[M], **values: Any) -> int:
    """queryset.update(**values) plus an UPDATE audit entry for each row that changed."""
    model = queryset.model
    rows = list(queryset.select_for_update(of=("self",)))
    entries = []
    changed_pks = []
    for old in rows:
        new = model(**{f.attname: getattr(old, f.attname) for f in model._meta.concrete_fields})
        for name, value in values.items():
            setattr(new, name, value)
        diff = model_instance_diff(old, new, use_json_for_changes=_json_changes())
        if diff:
            changed_pks.append(old.pk)
            entries.append(_entry(new, LogEntry.Action.UPDATE, diff))
    if changed_pks:
        model._default_manager.filter(pk__in=changed_pks).update(**values)
        if auditlog.contains(model):
            _write_entries(entries)
    return len(changed_pks)


def log_access(instance: models.Model) -> None:
    """Write an ACCESS entry: a person viewed or exported this record."""
    from auditlog.signals import accessed

    accessed.send(sender=instance.__class__, instance=instance)
