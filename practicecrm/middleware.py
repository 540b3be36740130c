"""Session lifetime rules, the client address the audit trail records, Server-Timing."""

import time
from urllib.parse import urlencode

from auditlog.middleware import AuditlogMiddleware
from axes.helpers import get_client_ip_address
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.db import connection
from django.shortcuts import redirect
from django.urls import reverse

_STARTED = "_session_started"
_LAST_SEEN = "_session_last_seen"


class SessionTimeoutMiddleware:
    """Log a user out after SESSION_IDLE_TIMEOUT seconds without a request.

    A shared front-desk computer left logged in is the most common way a patient
    record is seen by the wrong person, so the idle limit is short (15 minutes by
    default). SESSION_COOKIE_AGE caps the whole session whatever the activity.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = time.time()
            started = request.session.get(_STARTED, now)
            last_seen = request.session.get(_LAST_SEEN, now)
            idle = now - last_seen > settings.SESSION_IDLE_TIMEOUT
            too_old = now - started > settings.SESSION_COOKIE_AGE
            if idle or too_old:
                logout(request)
                messages.info(
                    request,
                    "You were signed out after a period of inactivity."
                    if idle
                    else "Your session reached its maximum length. Please sign in again.",
                )
                return redirect(f"{reverse('login')}?{urlencode({'next': request.path})}")
            if _STARTED not in request.session:
                request.session[_STARTED] = started
            # Written at most once a minute: saving the session on every request
            # would cost an UPDATE per page for a minute's precision nobody needs.
            if now - last_seen >= 60 or _LAST_SEEN not in request.session:
                request.session[_LAST_SEEN] = now
        return self.get_response(request)


class AuditMiddleware(AuditlogMiddleware):
    """auditlog's middleware, with the client address taken as django-axes takes it.

    auditlog believes any X-Forwarded-For header, so a client talking to us
    directly could write whatever address it liked into the audit trail. Axes
    takes REMOTE_ADDR (or, with django-ipware installed, what its AXES_IPWARE_*
    proxy settings allow), and the trail and the lockout then agree on who it was.
    """

    @staticmethod
    def _get_remote_addr(request):
        if settings.AUDITLOG_DISABLE_REMOTE_ADDR:
            return None
        return get_client_ip_address(request)


class ServerTimingMiddleware:
    """Say in a `Server-Timing` header how long the app took: `app;dur=12.3`.

    Browsers' dev tools and the page benchmark (benchmarks/pages.py) read it. It
    is first in MIDDLEWARE so the figure covers every other middleware too. With
    SERVER_TIMING_DB on, it also times each SQL statement through an execute
    wrapper and adds `db;dur=4.5`, `queries;desc="7"` and the worker's own CPU
    time, `cpu;dur=9.1` (on a busy machine the wall-clock figures include waiting
    for a core; CPU time does not) — off by default, since wrapping every
    statement is the only part with a cost worth naming.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        if settings.SERVER_TIMING_DB:
            timer = _QueryTimer()
            # The process's CPU time: one request at a time in a sync worker.
            cpu_started = time.process_time()
            with connection.execute_wrapper(timer):
                response = self.get_response(request)
            cpu = (time.process_time() - cpu_started) * 1000
            db = (
                f'db;dur={timer.seconds * 1000:.1f}, queries;desc="{timer.count}", '
                f"cpu;dur={cpu:.1f}"
            )
        else:
            response = self.get_response(request)
            db = ""
        app = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        # A streamed export's time here is only until its first byte; still true.
        response["Server-Timing"] = f"{app}, {db}" if db else app
        return response


class _QueryTimer:
    """An execute wrapper that adds up the time and number of SQL statements."""

    def __init__(self):
        self.seconds = 0.0
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.count += 1
