"""The audit trail: what is registered, the system actor, and audited bulk writes.

django-auditlog records saves and deletes through model signals. QuerySet.update()
and bulk_create() send no signals, so every bulk write to an audited model goes
through `bulk_create_audited` / `update_audited` below, which write the same
entries the signals would have written — with the actor and address of the
current request or task — and, like the signals, write none inside auditlog's
`disable_auditlog()` (an import's dry run, rolled back anyway).
"""

import datetime as dt
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

from auditlog.cid import get_cid
from auditlog.context import auditlog_disabled, auditlog_value, set_actor
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
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
    created = copy_insert(model, objs) or model._default_manager.bulk_create(
        objs, batch_size=batch_size
    )
    if auditlog.contains(model) and created and not auditlog_disabled.get():
        if connection.vendor == "postgresql":
            _copy_create_entries(model, created)
        else:
            LogEntry.objects.bulk_create(
                [
                    _entry(obj, LogEntry.Action.CREATE, changes)
                    for obj, changes in zip(created, _create_diffs(model, created), strict=True)
                ],
                batch_size=1000,
            )
    return created


def copy_insert(model: type[M], objs: Sequence[M]) -> list[M]:
    """bulk_create for new rows with COPY on PostgreSQL; [] where it does not apply.

    For the big imports: Django's bulk_create spends most of its time quoting
    values into the statement, COPY streams them. The ids are taken from the
    table's own sequence first (nextval, as an INSERT would) so the objects get
    their primary keys, like bulk_create gives them. Each field's pre_save runs
    (auto_now_add times) and related objects saved since they were assigned give
    their ids, as in bulk_create. No signals, like bulk_create. Returns [] (and
    writes nothing) on other databases, for rows that already have a primary
    key, or for a model whose key is not an auto-increment — callers then use
    bulk_create.
    """
    objs = list(objs)
    pk = model._meta.pk
    if (
        connection.vendor != "postgresql"
        or not objs
        or not isinstance(pk, models.AutoField | models.BigAutoField)
        or any(obj.pk is not None for obj in objs)
    ):
        return []
    table = model._meta.db_table
    with connection.cursor() as cursor:
        # The sequence looked up once: pg_get_serial_sequence() in the select list
        # is run again for every id, and cost seven times the nextval() itself.
        cursor.execute(
            "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence(%s, %s)::regclass AS seq) "
            "SELECT nextval(s.seq) FROM s, generate_series(1, %s)",
            [connection.ops.quote_name(table), pk.column, len(objs)],
        )
        ids = [row[0] for row in cursor.fetchall()]
    for obj, new_id in zip(objs, ids, strict=True):
        # Only an object with a related instance assigned has anything to check.
        if obj._state.__dict__.get("fields_cache"):
            obj._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]
        setattr(obj, pk.attname, new_id)
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    db = connections[DEFAULT_DB_ALIAS]  # not the proxy: looked up once, not per value
    readers = [_db_value_reader(f, db, timezone.now()) for f in fields]
    read_all = operator.attrgetter(*(f.attname for f in fields), "_state")  # always a tuple
    # The rows are built while they stream: nothing above queries, so PostgreSQL
    # inserts the first rows while the last are still being made.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for obj in objs:
            copy.write_row(
                [
                    found if type(found) in plain else read(obj)
                    for (plain, read), found in zip(readers, read_all(obj), strict=False)
                ]
            )
    alias = connection.alias  # read through the proxy once, not per object
    for obj in objs:
        obj._state.adding = False
        obj._state.db = alias
    return objs


# Per field class, the types of attribute that are their own database value
# (get_db_prep_save would return them unchanged). Exact classes only: a subclass
# may convert (a time-zone field).
_TEXT: set[type] = {str, type(None)}
_INTEGER: set[type] = {int, type(None)}
_AS_IS: dict[type, set[type]] = {
    models.CharField: _TEXT,
    models.EmailField: _TEXT,
    models.SlugField: _TEXT,
    models.TextField: _TEXT,
    models.BooleanField: {bool, type(None)},
    models.SmallIntegerField: _INTEGER,
    models.IntegerField: _INTEGER,
    models.BigIntegerField: _INTEGER,
    models.PositiveSmallIntegerField: _INTEGER,
    models.PositiveIntegerField: _INTEGER,
    models.PositiveBigIntegerField: _INTEGER,
    models.AutoField: _INTEGER,
    models.BigAutoField: _INTEGER,
    models.SmallAutoField: _INTEGER,
    models.DateField: {dt.date, type(None)},
}


def _db_value_reader(
    field: Any, db: Any, now: dt.datetime
) -> tuple[set[type], Callable[[models.Model], Any]]:
    """How copy_insert reads one field of a new row, as pre_save + get_db_prep_save.

    Those two cost more than the COPY for the plain columns that are most of a
    row: an attribute of one of the types returned (a str for a CharField, an
    int for an IntegerField or a foreign key to one…) is its own database value;
    anything else goes through them. The auto_now(_add) times of one COPY are
    one moment, as one INSERT's are.
    """
    attname = field.attname

    def prepared(obj: models.Model) -> Any:
        return field.get_db_prep_save(field.pre_save(obj, True), db)

    if type(field) is models.DateTimeField and (field.auto_now or field.auto_now_add):
        stamp = field.get_db_prep_save(now, db)

        def stamped(obj: models.Model) -> Any:
            setattr(obj, attname, now)
            return stamp

        return set(), stamped
    plain = _AS_IS.get(type(field), set())
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        plain = set()
    if isinstance(field, models.ForeignKey):
        target = type(field.target_field)
        plain = _AS_IS.get(target, set()) if type(field) is models.ForeignKey else set()
    if type(field) is models.DateTimeField:

        def date_time(obj: models.Model) -> Any:
            value = getattr(obj, attname)
            return None if value is None else prepared(obj)

        return set(), date_time
    return plain, prepared


def _log_fields() -> list[models.Field]:
    return [f for f in LogEntry._meta.concrete_fields if not f.primary_key]


def _copy(rows: Iterable[Sequence[Any]]) -> None:
    """COPY rows (values in _log_fields() order, ready for the database) into the trail.

    COPY is several times faster than INSERT for the 100,000 entries of a big
    import. The rows must be built in full first: building one may query (a
    related row's id for its additional data), and a connection in COPY mode can
    run nothing else.
    """
    rows = list(rows)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _log_fields())
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {connection.ops.quote_name(LogEntry._meta.db_table)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


class _ConnectionBusy(BaseException):
    """A query asked for while the connection is in a COPY (_copy_create_entries).

    A BaseException, so that no `except Exception` in the code that queried
    (a model's __str__, say) takes it for an ordinary failure and carries on.
    """


def _refuse_queries(execute, sql, params, many, context):
    raise _ConnectionBusy


def _write_entries(entries: Iterable[LogEntry]) -> None:
    """Insert audit entries: with COPY on PostgreSQL, bulk_create elsewhere."""
    entries = list(entries)
    if connection.vendor != "postgresql":
        LogEntry.objects.bulk_create(entries, batch_size=1000)
        return
    fields = _log_fields()
    db = connections[DEFAULT_DB_ALIAS]
    _copy([f.get_db_prep_save(getattr(e, f.attname), db) for f in fields] for e in entries)


def _copy_create_entries(model: type[M], objs: Sequence[M]) -> None:
    """The CREATE entries of bulk-created rows, with COPY, built while they stream.

    Building the entries costs Python about what storing them costs PostgreSQL, so
    they are built row by row into the COPY and the two work at once. A
    connection in COPY mode can run no query, though, and building an entry may
    need one (a related row for its text): the first entry, and with it what all
    share, is built before the COPY; should a later one query, it is stopped
    there, the COPY ends with the rows sent so far, and the rest are built in
    full and copied after.
    """
    build = _create_entry_rows(model, objs)
    rows = build(objs)
    first = next(rows)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in _log_fields())
    sent = 0
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(
            f"COPY {connection.ops.quote_name(LogEntry._meta.db_table)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        copy.write_row(first)
        sent = 1
        try:
            with connection.execute_wrapper(_refuse_queries):
                for row in rows:
                    copy.write_row(row)
                    sent += 1
        except _ConnectionBusy:
            pass
    if sent < len(objs):
        _copy(build(objs[sent:]))


def _create_entry_rows(
    model: type[M], objs: Sequence[M]
) -> Callable[[Sequence[M]], Iterator[list[Any]]]:
    """The CREATE entries of bulk-created rows: a function giving, for any run of
    `objs`, their entries as rows for COPY, one by one.

    What differs from row to row (the object, its text, its changes, its
    additional data) is computed per row; the rest (content type, actor, address,
    correlation id, time) once — built as database values directly, since making
    a LogEntry instance per row cost more than the COPY itself.
    """
    fields = _log_fields()
    db = connections[DEFAULT_DB_ALIAS]
    template = _entry(objs[0], LogEntry.Action.CREATE, None)
    fixed = [f.get_db_prep_save(getattr(template, f.attname), db) for f in fields]
    at = {f.attname: i for i, f in enumerate(fields)}
    # The JSON columns as JSON text, which COPY hands to PostgreSQL as is: the
    # same json.dumps Django's JSONField runs, without its wrapper per value.
    additional_json = _json_text(LogEntry._meta.get_field("additional_data"))

    def rows(objs: Sequence[M]) -> Iterator[list[Any]]:
        for obj, changes in zip(objs, _create_diffs(model, objs, as_json=True), strict=True):
            row = fixed.copy()
            pk = obj.pk
            row[at["object_pk"]] = str(pk)
            row[at["object_id"]] = pk if isinstance(pk, int) else None
            row[at["object_repr"]] = smart_str(obj)[:2000]
            row[at["changes"]] = changes
            get_additional = getattr(obj, "get_additional_data", None)
            if callable(get_additional):
                row[at["additional_data"]] = additional_json(get_additional())
            yield row

    return rows


def _json_text(field: Any) -> Callable[[Any], str | None]:
    # One encoder for all the rows: json.dumps(value, cls=...) makes a new one for
    # each value, with the same (default) options and so the same text.
    encode = (field.encoder or json.JSONEncoder)().encode

    def dumps(value: Any) -> str | None:
        return None if value is None else encode(value)

    return dumps


# How _create_diffs reads a field.
_PLAIN, _FOREIGN_KEY, _DATE_TIME, _CONSTANT, _OTHER = range(5)


def _create_diffs(model: type[M], objs: Sequence[M], *, as_json: bool = False) -> Iterator[Any]:
    """What auditlog's model_instance_diff(None, obj) gives, for many new rows at once.

    The field list, its include/exclude filtering, how each field's value is read
    and the "before" values (all of a row that did not exist) are worked out once
    rather than per row — the import of 100,000 patients spends its time here
    otherwise. Plain columns, foreign keys and set date-times are read directly
    (as auditlog's get_field_value reads them); anything else goes through
    get_field_value itself. A test checks the result equals model_instance_diff's
    for every registered model.

    With `as_json`, each diff comes as the text of the `changes` column (what
    Django's JSONField would store for it; None for no changes), for COPY.
    """
    from auditlog.diff import get_field_value, get_fields_in_model, get_mask_function, is_primitive

    use_json = _json_changes()
    rules = auditlog.get_model_fields(model)
    fields = get_fields_in_model(objs[0])
    if rules["include_fields"]:
        fields = [f for f in fields if f.name in rules["include_fields"]]
    if rules["exclude_fields"]:
        fields = [f for f in fields if f.name not in rules["exclude_fields"]]
    masked = {f.name for f in fields if f.name in rules["mask_fields"]}
    mask = get_mask_function(rules.get("mask_callable")) if masked else None

    use_tz = settings.USE_TZ
    fk_text = getattr(settings, "AUDITLOG_USE_FK_STRING_REPRESENTATION", False)

    def entry(name: str, old: Any, new: Any) -> tuple[Any, Any]:
        if mask is not None and name in masked:
            return (mask(smart_str(old)), mask(smart_str(new)))
        if not use_json:
            return (smart_str(old), smart_str(new))
        return (
            old if is_primitive(old) else smart_str(old),
            new if is_primitive(new) else smart_str(new),
        )

    # Per field: its name, its "before" value (nothing existed), the attribute
    # read for it, and how that attribute becomes the value auditlog compares —
    # or, for a value that is the same in every row, its entry, once. One
    # attrgetter reads all the attributes of a row at once.
    plan: list[tuple[str, Any, int, Any]] = []
    attributes: list[str] = []
    for f in fields:
        old = get_field_value(None, f, use_json)
        if f.one_to_many and not f.concrete and not use_json:
            # A reverse relation: auditlog records its manager's text, which names
            # the related model only ("patients.Appointment.None") — the same for
            # every row, so read once.
            value = get_field_value(objs[0], f, use_json)
            fixed = None if old == value else entry(f.name, old, value)
            plan.append((f.name, old, _CONSTANT, fixed))
            attributes.append("_state")  # read and ignored: a plain attribute
        elif not f.concrete:
            plan.append((f.name, old, _OTHER, f))
            attributes.append("_state")
        elif isinstance(f, models.DateTimeField):
            plan.append((f.name, old, _DATE_TIME, f))
            attributes.append(f.name)
        elif f.is_relation and f.many_to_one and not fk_text:
            plan.append((f.name, old, _FOREIGN_KEY, None))
            attributes.append(f.attname)
        elif not f.is_relation and not isinstance(f, models.JSONField):
            plan.append((f.name, old, _PLAIN, None))
            attributes.append(f.name)
        else:
            plan.append((f.name, old, _OTHER, f))
            attributes.append("_state")
    read_all = operator.attrgetter(*attributes, "_state")  # always a tuple

    if mask is None and not use_json:
        yield from _text_diffs(objs, plan, attributes, use_tz, as_json=as_json)
        return
    if as_json:
        yield from map(_json_text(LogEntry._meta.get_field("changes")), _create_diffs(model, objs))
        return
    for obj in objs:
        diff = {}
        for (name, old, kind, extra), found in zip(plan, read_all(obj), strict=False):
            if kind == _PLAIN:
                if not use_json and type(found) is not str:
                    found = _plain_text(found)
            elif kind == _FOREIGN_KEY:
                found = smart_str(found, strings_only=True)
            elif kind == _DATE_TIME:
                found = _naive(obj, extra, found, use_tz, use_json)
            elif kind == _CONSTANT:
                if extra is not None:
                    diff[name] = extra
                continue
            else:
                found = get_field_value(obj, extra, use_json)
            if old != found:
                diff[name] = entry(name, old, found)
        yield diff or None


def _text_diffs(
    objs: Sequence[Any],
    plan: list[tuple[str, Any, int, Any]],
    attributes: list[str],
    use_tz: bool,
    *,
    as_json: bool = False,
) -> Iterator[Any]:
    """_create_diffs for changes kept as text, unmasked: auditlog's default, the import's.

    Every "before" is the same text for every row, and a str is its own text,
    so the plain columns — most of a row — are read and compared in one
    comprehension; the few others one by one. PostgreSQL keeps JSON keys in its
    own order; elsewhere the entry keeps auditlog's (the fields') order.
    """
    from auditlog.diff import get_field_value

    old_text = [smart_str(old) for _, old, _, _ in plan]
    plain = [i for i, step in enumerate(plan) if step[2] == _PLAIN]
    plain_names = [plan[i][0] for i in plain]
    plain_old = [old_text[i] for i in plain]
    read_plain = operator.attrgetter(*(attributes[i] for i in plain), "_state")
    rest = [(*plan[i], old_text[i], attributes[i]) for i in range(len(plan)) if i not in plain]
    order = [name for name, _, _, _ in plan] if connection.vendor != "postgresql" else None

    def found_text(obj: Any, kind: int, extra: Any, attribute: str) -> Any:
        if kind == _OTHER:
            return get_field_value(obj, extra, False)
        found = getattr(obj, attribute)
        if kind == _DATE_TIME:
            return _naive(obj, extra, found, use_tz, False)
        if type(found) not in _PROTECTED:  # a foreign key: its id
            return smart_str(found, strings_only=True)
        return found

    if as_json and order is None:
        yield from _json_diffs(objs, plain_names, plain_old, read_plain, rest, found_text)
        return
    for obj in objs:
        diff = {
            name: (old, text)
            for name, old, found in zip(plain_names, plain_old, read_plain(obj), strict=False)
            if (text := found if type(found) is str else _plain_text(found)) != old
        }
        for name, old, kind, extra, before, attribute in rest:
            if kind == _CONSTANT:
                if extra is not None:
                    diff[name] = extra
                continue
            found = found_text(obj, kind, extra, attribute)
            if old != found:
                diff[name] = (before, _text(found))
        if order is not None:
            diff = {name: diff[name] for name in order if name in diff}
        if as_json:
            yield json.dumps(diff) if diff else None
        else:
            yield diff or None


def _json_diffs(
    objs: Sequence[Any],
    plain_names: list[str],
    plain_old: list[str],
    read_plain: Callable[[Any], tuple],
    rest: list[tuple],
    found_text: Callable[..., Any],
) -> Iterator[str | None]:
    """_text_diffs as the JSON text json.dumps() makes of each diff, written directly.

    Building the dict of (before, after) pairs and encoding it cost twice what
    joining the pieces does: each field's `"name": ["before", ` is the same in
    every row, and a value is encoded as json.dumps encodes a str. A test holds
    the text equal to json.dumps of _create_diffs' dict.
    """
    quote = encode_basestring_ascii
    plain_head = [
        f"{quote(name)}: [{quote(old)}, " for name, old in zip(plain_names, plain_old, strict=True)
    ]
    steps: list[tuple[int, str, tuple | None]] = []
    for name, old, kind, extra, before, attribute in rest:
        if kind == _CONSTANT:
            if extra is not None:
                steps.append((kind, f"{quote(name)}: [{quote(extra[0])}, {quote(extra[1])}]", None))
            continue
        steps.append((kind, f"{quote(name)}: [{quote(before)}, ", (old, extra, attribute)))
    for obj in objs:
        parts = [
            head + quote(text) + "]"
            for head, old, found in zip(plain_head, plain_old, read_plain(obj), strict=False)
            if (text := found if type(found) is str else _plain_text(found)) != old
        ]
        for kind, head, how in steps:
            if how is None:
                parts.append(head)
                continue
            old, extra, attribute = how
            found = found_text(obj, kind, extra, attribute)
            if old != found:
                parts.append(head + quote(_text(found)) + "]")
        yield "{" + ", ".join(parts) + "}" if parts else None


def _naive(obj: Any, field: Any, found: Any, use_tz: bool, use_json: bool) -> Any:
    """A date-time as get_field_value compares it: naive UTC."""
    from auditlog.diff import get_field_value

    if found is None:
        return None
    if type(found) is dt.datetime:
        if use_tz and found.utcoffset() is not None:
            return found.astimezone(dt.UTC).replace(tzinfo=None)
        return found
    return get_field_value(obj, field, use_json)


def _plain_text(value: Any) -> Any:
    text = _text(value)
    return str(text) if type(text).__name__ == "__proxy__" else text


# What smart_str returns for these is str() of them (no encoding, no laziness);
# smart_str(x, strings_only=True) returns these themselves.
_STR_OF = {int, bool, float, dt.date, dt.datetime, dt.time, type(None)}
_PROTECTED = {int, type(None), str}


def _text(value: Any) -> Any:
    """smart_str(value), without its checks for the common types."""
    kind = type(value)
    if kind is str:
        return value
    return str(value) if kind in _STR_OF else smart_str(value)


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
        if auditlog.contains(model) and not auditlog_disabled.get():
            _write_entries(entries)
    return len(changed_pks)


def log_access(instance: models.Model) -> None:
    """Write an ACCESS entry: a person viewed or exported this record."""
    from auditlog.signals import accessed

    accessed.send(sender=instance.__class__, instance=instance)
