"""How fast the busiest pages answer through a real HTTP server, and what limits them.

Starts gunicorn (`practicecrm.wsgi`, 3 sync workers as docker-compose.yml runs it
in production, DEBUG off) on its own port against DATABASE_URL, logs several
clients in through /login/,
warms up, then requests each page BENCH_PAGE_REQUESTS times from BENCH_CONCURRENCY
threads, each with its own keep-alive session. Per page it reports the p50/p95/p99
of the server's own time (the `Server-Timing: app;dur=` header of
practicecrm.middleware.ServerTimingMiddleware), the client-side p95, requests/s,
and from the same header the SQL time and the worker's CPU time per request (on
a shared machine wall-clock times include waiting for a core; CPU time does not).

    BENCH_PAGES_ONLY=Today,Messages  BENCH_PAGE_REQUESTS=200  BENCH_CONCURRENCY=4

The limit, measured in the same run: the page's SQL run alone. One render is
captured in-process (django.test.Client, logged in as the same user), then each
captured statement is executed again through a plain cursor (benchmarks.common),
best of 5, and the bests are summed. Ratio = p95 server time ÷ that sum: what
Python, the ORM, templates and middleware add on top of PostgreSQL.

The permission filter: the patient list (first page, no search) for a user with 1
location, with all 20 and an admin must cost the same number of queries; their
times are reported.

    DATABASE_URL=postgres://…/pcrm_scale .venv/bin/python benchmarks/pages.py

The data come from `manage.py generate_scale` (users bench-admin,
bench-frontdesk-1, bench-manager-20, password bench-password). Only GET requests
are made; the patient page writes its ACCESS audit entry, as it does for anyone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from benchmarks.common import percentile, sql_alone  # noqa: E402
from benchmarks.results import Figure  # noqa: E402
from locations.access import locations_for  # noqa: E402
from patients.models import Appointment, Patient  # noqa: E402

PORT = int(os.environ.get("BENCH_PAGES_PORT", "8041"))
# Production's worker count: docker-compose.yml sets WEB_CONCURRENCY=3 sync workers.
WORKERS = int(os.environ.get("BENCH_WORKERS", "3"))
REQUESTS = int(os.environ.get("BENCH_PAGE_REQUESTS", "200"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
WARMUP = int(os.environ.get("BENCH_PAGE_WARMUP", "3"))  # requests per client per page
# A slow page stops early (after at least 5 requests per client): its p95 is clear
# long before 200 requests, and the whole run stays within minutes.
SECONDS = float(os.environ.get("BENCH_PAGE_SECONDS", "60"))
# Only the pages whose name contains one of these (comma-separated), e.g. "Today,Messages".
ONLY = [w.strip() for w in os.environ.get("BENCH_PAGES_ONLY", "").split(",") if w.strip()]
PASSWORD = os.environ.get("BENCH_PASSWORD", "bench-password")
USERS = {
    "frontdesk": "bench-frontdesk-1",
    "manager": "bench-manager-20",
    "admin": "bench-admin",
}
BASE_URL = f"http://127.0.0.1:{PORT}"


@dataclass
class Page:
    name: str
    who: str  # key of USERS
    path: str
    target_ms: float | None  # p95 at 1×; None: reported only


# --- the server -------------------------------------------------------------------


def start_server() -> subprocess.Popen:
    env = os.environ | {
        "DEBUG": "False",
        "SERVER_TIMING_DB": "True",  # db;dur and the query count per request
        "WEB_CONCURRENCY": str(WORKERS),
    }
    server = subprocess.Popen(
        [
            str(BASE_DIR / ".venv" / "bin" / "gunicorn"),
            "practicecrm.wsgi",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--workers",
            str(WORKERS),
            "--worker-tmp-dir",
            "/dev/shm",
            "--timeout",
            "120",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{BASE_URL}/login/", timeout=10).status_code == 200:
                return server
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"gunicorn did not answer on {BASE_URL}")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def login(username: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{BASE_URL}/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, "no CSRF token on /login/"
    response = session.post(
        f"{BASE_URL}/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token[1]},
        headers={"Referer": f"{BASE_URL}/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, f"login of {username} failed ({response.status_code})"
    return session


_TIMING = re.compile(r"(\w+);(?:dur=([\d.]+)|desc=\"?(\d+)\"?)")


def server_timing(header: str) -> dict[str, float]:
    return {m[1]: float(m[2] or m[3]) for m in _TIMING.finditer(header)}


# --- load -------------------------------------------------------------------------


@dataclass
class Load:
    app_ms: list[float]
    db_ms: list[float]
    client_ms: list[float]
    queries: list[float]
    cpu_ms: list[float]
    wall_s: float


def load(sessions: list[requests.Session], path: str, total: int) -> Load:
    """`total` GETs of `path`, shared out over one thread per session."""
    for session in sessions:  # warm: templates, plans, the session row, caches
        for _ in range(WARMUP):
            session.get(BASE_URL + path, timeout=120)
    results: list[tuple[float, dict[str, float]]] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))

    deadline = time.monotonic() + SECONDS
    minimum = 5 * len(sessions)

    def client(session: requests.Session) -> None:
        while True:
            with lock:
                n = next(counter, None)
                if n is None or (n >= minimum and time.monotonic() > deadline):
                    return
            started = time.perf_counter()
            response = session.get(BASE_URL + path, timeout=120, allow_redirects=False)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                errors.append(f"{path}: {response.status_code}")
                return
            with lock:
                results.append((elapsed, server_timing(response.headers["Server-Timing"])))

    threads = [threading.Thread(target=client, args=(s,)) for s in sessions]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return Load(
        app_ms=[t["app"] for _, t in results],
        db_ms=[t.get("db", 0.0) for _, t in results],
        client_ms=[c for c, _ in results],
        queries=[t.get("queries", 0.0) for _, t in results],
        cpu_ms=[t.get("cpu", 0.0) for _, t in results],
        wall_s=wall,
    )


# --- the limit: the same SQL alone -------------------------------------------------


def page_sql(username: str, path: str) -> tuple[int, float]:
    """How many statements one render sends, and their time run alone (ms).

    One render in-process as the same user, captured; then benchmarks.common's
    "SQL alone": each statement again through a plain cursor, best of 5, summed,
    in a rolled-back transaction (the ACCESS entry a patient page writes is timed
    but not written twice).
    """
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    client.get(path)  # warm, like the server
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return len(captured), sql_alone(captured.captured_queries)


# --- what to request ------------------------------------------------------------------


def _history_patient(username: str) -> Patient:
    """A patient of the user's location with years of visits: the most, capped at 5 years'."""
    user = get_user_model().objects.get(username=username)
    location = locations_for(user).order_by("pk").first()
    busiest = (
        Appointment.objects.filter(location=location, patient__merged_into__isnull=True)
        .values("patient_id")
        .annotate(n=Count("pk"))
        .order_by("-n", "patient_id")
        .first()
    )
    assert busiest, f"no appointments at {location}"
    return Patient.objects.get(pk=busiest["patient_id"])


def pages(scale: float) -> list[Page]:
    patient = _history_patient(USERS["frontdesk"])
    first = (patient.first_name or "").split()[0]
    digits = re.sub(r"\D", "", patient.mobile_phone or patient.home_phone)[-10:]
    phone = f"({digits[:3]}) {digits[3:6]}-{digits[6:]}" if len(digits) == 10 else digits
    dob = f"{patient.date_of_birth:%m/%d/%Y}" if patient.date_of_birth else "01/01/1970"

    def search(q: str) -> str:
        return "/patients/?" + urlencode({"q": q})

    print(
        f"  patient page: #{patient.pk} with {patient.appointments.count()} visits; "
        f"searches {first} {patient.last_name!r}, {phone!r}, {dob!r}"
    )
    return [
        Page("Today worklist — front desk, 1 location", "frontdesk", "/followups/today/", 150),
        Page("Today worklist — manager, 20 locations", "manager", "/followups/today/", 150),
        Page(
            "Patient search by name — front desk",
            "frontdesk",
            search(f"{first} {patient.last_name}"),
            150,
        ),
        Page("Patient search by name — manager, 20", "manager", search(patient.last_name), 150),
        Page("Patient search by phone — front desk", "frontdesk", search(phone), 150),
        Page("Patient search by DOB — front desk", "frontdesk", search(dob), 150),
        Page("Patient page — front desk", "frontdesk", f"/patients/{patient.pk}/", 150),
        Page("Recall dashboard — admin", "admin", "/reports/", 300),
        Page("Recall dashboard — manager, 20", "manager", "/reports/", 300),
        Page("Messages page — front desk, 1 location", "frontdesk", "/reminders/messages/", None),
        Page("Messages page — manager, 20 locations", "manager", "/reminders/messages/", None),
    ]


def measure(page: Page, sessions: list[requests.Session], scale: float, scenario: str) -> Figure:
    result = load(sessions, page.path, REQUESTS)
    queries, alone = page_sql(USERS[page.who], page.path)
    p95 = percentile(result.app_ms, 95)
    target = ""
    met = None
    if page.target_ms is not None:
        limit = page.target_ms * (2 if scale >= 10 else 1)
        target, met = f"p95 ≤ {limit:g} ms", p95 <= limit
    figure = Figure(
        scenario=scenario,
        name=page.name,
        value=p95,
        unit="ms p95",
        limit=alone,
        limit_unit="ms",
        limit_label=f"its {queries} SQL queries run alone",
        target=target,
        met=met,
        extra={
            "p50": f"{percentile(result.app_ms, 50):.1f} ms",
            "p99": f"{percentile(result.app_ms, 99):.1f} ms",
            "client p95": f"{percentile(result.client_ms, 95):.1f} ms",
            "req/s": f"{len(result.app_ms) / result.wall_s:.1f}",
            "queries": queries,
            "db p50": f"{percentile(result.db_ms, 50):.1f} ms",
            # The worker's CPU per request: what the page costs us, load or not.
            "cpu p50": f"{percentile(result.cpu_ms, 50):.1f} ms",
        },
    )
    served = {int(q) for q in result.queries}
    if served != {queries}:
        figure.extra["queries served"] = "/".join(str(q) for q in sorted(served))
    print(figure.line(), flush=True)
    return figure


def permission_figures(sessions: dict[str, list[requests.Session]], scale: float) -> list[Figure]:
    """The patient list, first page, for 1 location, 20 locations and an admin."""
    figures = [
        measure(
            Page(f"Patient list — {label}", who, "/patients/", None),
            sessions[who],
            scale,
            "Permissions",
        )
        for who, label in (
            ("frontdesk", "front desk, 1 location"),
            ("manager", "manager, 20 locations"),
            ("admin", "admin, all locations"),
        )
    ]
    counts = {f.name: f.extra["queries"] for f in figures}
    same = len(set(counts.values())) == 1
    for f in figures:
        f.target, f.met = "same query count for 1, 20 and all locations", same
    print(f"  permission filter query counts: {counts} — {'equal' if same else 'NOT EQUAL'}")
    return figures


def run(scale: float = 1) -> list[Figure]:
    users = get_user_model().objects
    missing = [u for u in USERS.values() if not users.filter(username=u).exists()]
    if missing:
        raise SystemExit(f"missing users {missing}: run manage.py generate_scale first")
    print(
        f"Pages: gunicorn {WORKERS} sync workers, {CONCURRENCY} clients, "
        f"{REQUESTS} requests per page, at {scale:g}×"
    )
    todo = [p for p in pages(scale) if not ONLY or any(w in p.name for w in ONLY)]
    wants_permissions = not ONLY or any(w in "Permissions" for w in ONLY)
    server = start_server()
    try:
        sessions = {who: [login(u) for _ in range(CONCURRENCY)] for who, u in USERS.items()}
        figures = [measure(page, sessions[page.who], scale, "Pages") for page in todo]
        if wants_permissions:
            figures += permission_figures(sessions, scale)
    finally:
        stop_server(server)
    return figures


if __name__ == "__main__":
    # Ctrl-C or kill: stop the server on the way out (run()'s finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    run(float(os.environ.get("BENCH_SCALE", "1")))
