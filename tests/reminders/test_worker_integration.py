"""The outbox with a real Celery worker process, real Redis and real PostgreSQL (#4).

Each test starts `celery -A practicecrm worker` (prefork, two children) as a
subprocess on the pytest-django test database, which is why the tests are
transactional: the worker must see committed rows. SMS go through the real
twilio SDK to a local Twilio server in this process, behind a `Gate` that can
hold a request open. What every test asserts in the end is the promise of the
outbox: the Twilio server got exactly one message per idempotency key.

Tests publish to a queue of their own, so a stray task from another test (or
another run on the same Redis database) never reaches their worker. The Redis
restart test runs its own redis-server: the shared one on 6379 is not ours to stop.
"""

import ast
import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import parse_qs, quote
from urllib.request import Request, urlopen

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from practicecrm.celery import app as celery_app
from reminders.models import OutboundMessage
from reminders.reconcile import reconcile_stale_sending
from reminders.recovery import requeue_stale_queued
from reminders.services import dispatch_due
from reminders.tasks import dispatch_reminders, send_message, send_messages
from reminders.twilio_sim import TwilioSim
from tests.factories import PatientFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

Status = OutboundMessage.Status
# A reply the practice owes the patient: sent whatever the consent, quiet hours and
# caps (tested with planning), so only the outbox's machinery decides what happens.
TRANSACTIONAL = OutboundMessage.Kind.CONFIRMATION_REPLY
# What the worker logs when a task returns, e.g. "… send_message[<id>] succeeded in 0.02s: 'sent'"
# for one message, "… send_messages[<id>] succeeded in 0.1s: {'sent': 30}" for the dispatcher's.
SENT, SKIPPED = r"send_message\[.*succeeded.*: 'sent'", r"send_message\[.*succeeded.*: 'skipped'"
BATCH = r"send_messages\[.*succeeded.*?: (\{.*\})"
BATCH_SKIPPED = r"send_messages\[.*succeeded.*'skipped': [1-9]"
DISPATCHED = r"dispatch_reminders\[.*succeeded"
SID, TOKEN = "AC" + "4" * 32, "worker-test-token"
CELERY = Path(sys.executable).with_name("celery")
# A pytest killed outright (a CI timeout) runs no teardown; the kernel then kills
# the worker it started rather than leave it holding the test database open.
DIE_WITH_PYTEST = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
# Generous for a loaded 2-core CI machine; a passing run waits far less.
TIMEOUT = 30.0


def wait_until(check: Callable[[], object], *, what: str, timeout: float = TIMEOUT):
    """Poll `check` until it is truthy; fail (not hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- a Twilio server that can hold a request open ---------------------------------------


class Gate:
    """An HTTP hop between the worker and the Twilio server.

    It forwards every request unchanged, except that a create request matching
    `hold` waits until `release` is set. That is the moment of a crash mid-send:
    the request has left the worker, the answer has not come back. Released after
    the worker died, the server takes the message and its answer goes nowhere.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.hold: Callable[[dict[str, str]], bool] = lambda form: False
        self.release = threading.Event()
        self.held: list[dict[str, str]] = []
        # The server's answers to create requests (HTTP status, JSON), got or not.
        self.answers: list[tuple[int, dict]] = []
        self._lock = threading.Lock()

    def wait_held(self, count: int) -> None:
        wait_until(lambda: len(self.held) >= count, what=f"{count} held Twilio request(s)")

    def start(self) -> "Gate":
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                if gate.hold(form):
                    with gate._lock:
                        gate.held.append(form)
                    gate.release.wait(TIMEOUT)
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                headers = {
                    name: value
                    for name in ("Authorization", "Content-Type", "Accept", "User-Agent")
                    if (value := self.headers.get(name))
                }
                request = Request(
                    gate.upstream + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urlopen(request, timeout=10) as response:
                        status, data = response.status, response.read()
                except HTTPError as exc:
                    status, data = exc.code, exc.read()
                if body is not None:
                    with gate._lock:
                        gate.answers.append((status, json.loads(data)))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the worker that asked was killed meanwhile

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def twilio(settings):
    server = TwilioSim(account_sid=SID, auth_token=TOKEN).start()
    gate = Gate(server.url).start()
    # This process (reconciliation) talks to the server directly, the worker via the gate.
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    yield server, gate
    gate.stop()
    server.stop()


def batch_totals(worker: "Worker") -> Counter:
    """How the rows of every batch send task the worker finished ended, added up."""
    totals: Counter = Counter()
    for result in re.findall(BATCH, worker.log()):
        totals.update(ast.literal_eval(result))
    return totals


def sent_per_key(server) -> Counter:
    """How many SMS the Twilio server took for each idempotency key (it is in the body)."""
    return Counter(form["Body"].removeprefix("Reminder ") for form in server.received)


# --- worker processes ---------------------------------------------------------------------


class Worker:
    """`celery -A practicecrm worker` in its own process group, logging to a file."""

    def __init__(self, *, env: dict[str, str], queue: str, log_path: Path):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *DIE_WITH_PYTEST,
                str(CELERY),
                "-A",
                "practicecrm",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--loglevel=INFO",
                "-Q",
                queue,
                "-n",
                f"{uuid.uuid4().hex[:8]}@%h",
            ],
            env=env,
            cwd=django_settings.BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own group, so one killpg reaches the pool's children too.
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_for(self, pattern: str, count: int = 1) -> None:
        wait_until(
            lambda: self.count(pattern) >= count or self.process.poll() is not None,
            what=f"{pattern!r} ×{count} in the worker log",
        )
        assert self.count(pattern) >= count, f"the worker exited:\n{self.log()[-3000:]}"

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost machine would: no goodbye to anyone."""
        with contextlib.suppress(ProcessLookupError):  # the whole group already gone
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()


def database_url() -> str:
    """The test database (test_…), which the worker must use rather than DATABASE_URL's."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "postgres", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(transactional_db, twilio, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Start workers on the test database; all of them are killed after the test.

    Depending on transactional_db makes the kill come before the tables are flushed.
    """
    if connection.vendor != "postgresql" or not django_settings.CELERY_BROKER_URL.startswith(
        "redis://"
    ):
        pytest.skip("needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL)")
    _, gate = twilio
    started: list[Worker] = []

    def start(
        *, queue: str, broker: str = django_settings.CELERY_BROKER_URL, **settings: str
    ) -> Worker:
        env = {
            **settings,
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "practicecrm.settings",
            # This checkout's code, whatever else is installed or wherever pytest runs.
            "PYTHONPATH": str(django_settings.BASE_DIR),
            "DATABASE_URL": database_url(),
            "REDIS_URL": broker,
            "CELERY_BROKER_URL": broker,
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_API_BASE_URL": gate.url,
        }
        worker = Worker(env=env, queue=queue, log_path=tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        # Shown by pytest only when the test failed.
        print(f"--- {worker.log_path.name}\n{worker.log()[-5000:]}")


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own, where this process publishes and its workers consume."""
    name = f"pcrm-test-{uuid.uuid4().hex[:10]}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = name
    with celery_app.connection_for_write() as conn:
        bound = Queue(name, Exchange(name), routing_key=name)(conn.default_channel)
        bound.declare()
        bound.purge()
        try:
            yield name
        finally:
            celery_app.conf.task_default_queue = previous
            bound.purge()
            bound.delete()


def due_rows(count: int, *, prefix: str) -> list[OutboundMessage]:
    patient = PatientFactory()
    scheduled = timezone.now() - dt.timedelta(minutes=1)
    return OutboundMessage.objects.bulk_create(
        OutboundMessage(
            idempotency_key=f"{prefix}-{i}",
            kind=TRANSACTIONAL,
            channel=OutboundMessage.Channel.SMS,
            patient=patient,
            location=patient.home_location,
            to=patient.mobile_phone,
            sender="+15125550100",
            body=f"Reminder {prefix}-{i}",
            scheduled_for=scheduled,
        )
        for i in range(count)
    )


def statuses(rows: list[OutboundMessage]) -> Counter:
    return Counter(
        OutboundMessage.objects.filter(pk__in=[r.pk for r in rows]).values_list("status", flat=True)
    )


# --- the scenarios --------------------------------------------------------------------------


def test_two_dispatchers_at_once_send_every_row_exactly_once(start_worker, queue, twilio):
    server, _ = twilio
    worker = start_worker(queue=queue)  # boots while the rows are made
    rows = due_rows(30, prefix="a")
    both_ready = threading.Barrier(2)
    claimed: list[list[int]] = []

    def dispatcher() -> None:
        try:
            both_ready.wait(5)
            claimed.append(dispatch_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    first, second = claimed
    assert sorted(first + second) == sorted(r.pk for r in rows)  # each claimed by one only
    wait_until(lambda: statuses(rows)[Status.SENT] == 30, what="30 rows sent")
    assert sent_per_key(server) == {f"a-{i}": 1 for i in range(30)}
    # Each row in one batch task only: none was queued twice.
    wait_until(lambda: batch_totals(worker)["sent"] == 30, what="the batch tasks to end")
    assert batch_totals(worker) == {"sent": 30}


def test_a_batch_send_task_delivered_twice_sends_each_row_once(start_worker, queue, twilio):
    server, _ = twilio
    worker = start_worker(queue=queue)
    rows = due_rows(20, prefix="e")
    OutboundMessage.objects.filter(pk__in=[r.pk for r in rows]).update(status=Status.QUEUED)

    ids = [r.pk for r in rows]
    send_messages.apply_async(args=[ids])
    send_messages.apply_async(args=[ids[::-1]])  # the broker's "at least once", reordered

    wait_until(lambda: sum(batch_totals(worker).values()) == 40, what="both deliveries to end")
    assert batch_totals(worker) == {"sent": 20, "skipped": 20}
    assert statuses(rows) == {Status.SENT: 20}
    assert sent_per_key(server) == {f"e-{i}": 1 for i in range(20)}


def test_a_send_task_delivered_twice_sends_once(start_worker, queue, twilio):
    server, _ = twilio
    worker = start_worker(queue=queue)
    (row,) = due_rows(1, prefix="b")
    OutboundMessage.objects.filter(pk=row.pk).update(status=Status.QUEUED)

    send_message.apply_async(args=[row.pk])
    send_message.apply_async(args=[row.pk])  # the broker's "at least once"

    worker.wait_for(r"send_message\[.*succeeded", count=2)
    assert (worker.count(SENT), worker.count(SKIPPED)) == (1, 1)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 1)
    assert sent_per_key(server) == {"b-0": 1}


def test_a_worker_killed_mid_send_is_never_resent_and_is_reconciled(start_worker, queue, twilio):
    server, gate = twilio
    gate.hold = lambda form: form.get("Body") == "Reminder c-0"
    first = start_worker(queue=queue)
    (row,) = due_rows(1, prefix="c")
    assert dispatch_due() == [row.pk]

    gate.wait_held(1)  # the SMS request is on its way to Twilio…
    first.kill()  # …and the worker dies before it hears back
    gate.release.set()  # Twilio took the message all the same
    wait_until(lambda: gate.answers, what="the Twilio server to take the held SMS")
    ((http_status, answer),) = gate.answers
    assert http_status == 201
    row.refresh_from_db()
    assert row.status == Status.SENDING

    # The unacknowledged task goes back to the queue, as Redis does after its
    # visibility timeout (an hour by default; zero here), and a new worker gets it.
    second = start_worker(queue=queue)
    with Connection(
        django_settings.CELERY_BROKER_URL, transport_options={"visibility_timeout": 0}
    ) as conn:
        conn.default_channel.qos.restore_visible()
    second.wait_for(BATCH_SKIPPED)  # the dispatcher's send task, redelivered
    row.refresh_from_db()
    assert row.status == Status.SENDING  # not resent: Twilio may have it (it does)
    assert sent_per_key(server) == {"c-0": 1}

    reconcile_stale_sending(older_than=dt.timedelta(0))

    row.refresh_from_db()
    assert (row.status, row.provider_id) == (Status.SENT, answer["sid"])
    assert sent_per_key(server) == {"c-0": 1}


class RedisServer:
    """A throwaway redis-server with no persistence: a restart loses every task."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(
            lambda: answers() or self.process.poll() is not None, what="redis-server to start"
        )
        assert self.process.poll() is None, f"redis-server could not start on {self.port}"
        client.close()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.kill()


def test_send_tasks_lost_in_a_redis_restart_still_go_out_once(own_redis, start_worker, twilio):
    server, gate = twilio
    held = itertools.count()
    gate.hold = lambda form: next(held) < 2  # the first two sends stay in flight
    # One row per send task, so that six tasks wait in Redis while two are sent.
    worker = start_worker(queue="celery", broker=own_redis.url, REMINDERS_SEND_BATCH="1")
    rows = due_rows(8, prefix="d")

    def dispatch() -> None:
        # As beat would: the dispatcher runs in the worker, which queues the sends.
        with celery_app.connection_for_write(own_redis.url) as conn:
            dispatch_reminders.apply_async(connection=conn, queue="celery")

    dispatch()
    # Both pool processes are busy sending, so the dispatch is over: two rows are
    # "sending" and the six others "queued", their tasks waiting in Redis.
    gate.wait_held(2)
    assert statuses(rows) == {Status.SENDING: 2, Status.QUEUED: 6}

    own_redis.kill()  # no persistence: the six tasks are gone
    own_redis.start()
    gate.release.set()
    wait_until(lambda: statuses(rows)[Status.SENT] == 2, what="the two sends in flight to end")

    # The engine alone cannot help: the dispatcher claims only "planned" rows.
    worker.wait_for("Connected to redis://", count=2)
    dispatch()
    worker.wait_for(DISPATCHED, count=2)
    assert statuses(rows) == {Status.SENT: 2, Status.QUEUED: 6}

    assert requeue_stale_queued(older_than=dt.timedelta(0)) == 6
    dispatch()
    wait_until(lambda: statuses(rows)[Status.SENT] == 8, what="all eight rows sent")
    assert sent_per_key(server) == {f"d-{i}": 1 for i in range(8)}
