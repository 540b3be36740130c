"""PracticeCRM settings.

One settings module. Every difference between a laptop and production is an
environment variable read through django-environ; the defaults are the embedded
run (`make run` on a bare machine): SQLite, a filesystem Celery transport and the
console email backend. See README.md "Configuration".
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# A local .env is optional; real deployments set the environment directly.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# The default key is only good for the embedded run; `check --deploy` flags it.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-embedded-run-only-change-me")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "guardian",
    "auditlog",
    "axes",
    "csp",
    "django_htmx",
    "django_celery_beat",
    "practicecrm",
    "locations",
    "patients",
    "followups",
    "reminders",
    "imports",
    "reports",
]

MIDDLEWARE = [
    # First, so its Server-Timing header covers everything below.
    "practicecrm.middleware.ServerTimingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After messages: it tells the signed-out user why.
    "practicecrm.middleware.SessionTimeoutMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "practicecrm.middleware.AuditMiddleware",
    # Axes must be last: it reads the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "practicecrm.urls"
WSGI_APPLICATION = "practicecrm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "practicecrm.context_processors.nav",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'practicecrm.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded run has a web server, a worker and beat writing to one file:
    # WAL and immediate transactions avoid "database is locked" under that load.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # The covering indexes' extra columns (INCLUDE) are PostgreSQL's; SQLite builds
    # the same indexes without them, which is all the embedded demo needs.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # PostgreSQL's JIT compiles every big aggregation again on each run — about 1 s
    # of the recall dashboard's 1.4 s at 20 locations (issue #7). A web app's
    # queries never repay the compile; off for every connection.
    # random_page_cost: PostgreSQL's default (4) prices a random read as a
    # spinning disk's; on SSD or from memory it is about a sequential one. With 4
    # the planner hashed all 1,000,000 patients to join Today's "Lapsed" tab at
    # 10× (380 ms) where index lookups take 27 ms. 1.1 is PostgreSQL's own advice
    # for SSD storage; DATABASE_RANDOM_PAGE_COST changes it.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = (
        options.get("options", "")
        + " -c jit=off"
        + f" -c random_page_cost={env.float('DATABASE_RANDOM_PAGE_COST', default=1.1)}"
    ).strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Authentication and sessions -------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # Axes first so a locked-out login never reaches the password check.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Server-Timing also reports SQL time and query count (benchmarks/pages.py turns it
# on); off in production, where timing every statement is cost without a reader.
SERVER_TIMING_DB = env.bool("SERVER_TIMING_DB", default=False)

# Idle timeout (seconds without a request) and absolute maximum session age.
SESSION_IDLE_TIMEOUT = env.int("SESSION_IDLE_TIMEOUT", default=15 * 60)
SESSION_COOKIE_AGE = env.int("SESSION_MAX_AGE", default=10 * 60 * 60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.5)
# Lock a username from one address; unknown usernames are counted the same way, so
# the response never tells an attacker whether an account exists.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_IPWARE_PROXY_COUNT = env.int("PROXY_COUNT", default=0)

# --- Security headers --------------------------------------------------------------
# HTTPS=true in production (behind TLS): redirects, secure cookies, HSTS.
HTTPS = env.bool("HTTPS", default=False)
SECURE_SSL_REDIRECT = HTTPS
# Load balancers probe /healthz over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_COOKIE_HTTPONLY = True

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    },
}

# --- Internationalisation ------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="America/New_York")
USE_I18N = True
USE_TZ = True
# Phone numbers typed without a country code are read in this region.
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="US")
# Imports (issue #5): largest file accepted, and how 03/01/2026 is read (MDY or DMY).
IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", default=50 * 1024 * 1024)
IMPORT_DATE_ORDER = env.str("IMPORT_DATE_ORDER", default="MDY")
# Uploaded files (imports wait here until read). Never served: there is no MEDIA_URL
# route, so a patient list uploaded for import cannot be fetched by its address.
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")

# --- Static files ---------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Compressed, not manifest-hashed: pages render even where collectstatic
        # has not run (tests, a first `make run`), and there is one stylesheet.
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage",
    },
}
# Tests and a first run without collectstatic still find the files.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)
WHITENOISE_MANIFEST_STRICT = False

# --- Celery ---------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Without Redis the worker, beat and web processes share a filesystem transport, so
# the embedded run still exercises real task queueing between processes.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery" / "queue"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "store_processed": False,
        # Exchange tables (worker control, fanout): under var/, not the working dir.
        "control_folder": str(VAR_DIR / "celery" / "control"),
    }
CELERY_TASK_IGNORE_RESULT = True
# The outbox (issue #7): the dispatcher queues one send task per REMINDERS_SEND_BATCH
# rows; the task claims, checks and records them together, and has up to
# REMINDERS_SEND_CONCURRENCY of them on their way to Twilio at a time.
REMINDERS_SEND_BATCH = env.int("REMINDERS_SEND_BATCH", default=50)
REMINDERS_SEND_CONCURRENCY = env.int("REMINDERS_SEND_CONCURRENCY", default=8)
CELERY_TASK_ACKS_LATE = True
# Celery's Django fix-up closes the database connection around every task unless this
# is set: a new PostgreSQL connection (and backend process) per task. Tasks keep it as
# requests do instead — CONN_MAX_AGE and health checks apply (practicecrm/celery.py).
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat copies these into django-celery-beat's tables, where admins can see them.
CELERY_BEAT_SCHEDULE = {
    "clear-expired-sessions": {
        "task": "practicecrm.tasks.clear_expired_sessions",
        "schedule": 60 * 60,
    },
    "lapse-followups": {
        "task": "followups.tasks.lapse_followups",
        "schedule": 60 * 60,
    },
    "dispatch-reminders": {
        "task": "reminders.tasks.dispatch_reminders",
        "schedule": 60,
    },
    "release-stale-bookings": {
        "task": "followups.tasks.release_stale_bookings",
        "schedule": 60 * 60,
    },
    # The dashboard's message counts (reminders.tallies): pending changes, folded in.
    "compact-message-tallies": {
        "task": "reminders.tasks.compact_message_tallies",
        "schedule": 60,
    },
    "reconcile-sending": {
        "task": "reminders.tasks.reconcile_sending",
        "schedule": 5 * 60,
    },
    # A Redis restart loses queued send tasks; their rows go back to "planned".
    "requeue-lost-sends": {
        "task": "reminders.tasks.requeue_queued",
        "schedule": 5 * 60,
    },
}

# --- Email ----------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="PracticeCRM <no-reply@localhost>")

# --- SMS (Twilio) ------------------------------------------------------------------------
# Unset: the console sender (prints, sends nothing). TWILIO_API_BASE_URL is for tests
# that run a local server speaking Twilio's HTTP API.
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")
# The public https://host Twilio calls, when a proxy hides it from Django; webhook
# signatures are computed over that URL.
TWILIO_WEBHOOK_BASE_URL = env.str("TWILIO_WEBHOOK_BASE_URL", default="")
# Where patients reach the app from outside (email unsubscribe links); empty: no link,
# rather than a link to a host name the patient cannot reach. `make run` sets it.
SITE_URL = env.str("SITE_URL", default="")

# --- Audit trail ------------------------------------------------------------------------
AUDITLOG_INCLUDE_ALL_MODELS = False
AUDITLOG_DISABLE_REMOTE_ADDR = False
# Username of the inactive account recorded as the actor of background work.
SYSTEM_ACTOR_USERNAME = "system"

# --- django-guardian -------------------------------------------------------------------
# No anonymous user row: anonymous visitors have no object permissions at all.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

# --- Logging ----------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

PAGE_SIZE = 25

# --- Patients --------------------------------------------------------------------------
# The patient list counts exactly up to this many, then says "10,000+" (issue #7):
# an exact count reads every patient of the user's locations.
PATIENT_LIST_COUNT_CAP = env.int("PATIENT_LIST_COUNT_CAP", default=10_000)

# --- Follow-ups ------------------------------------------------------------------------
# Buckets: upcoming = due within FOLLOWUP_UPCOMING_DAYS; due = due date reached within
# FOLLOWUP_DUE_WINDOW_DAYS; overdue = longer past due; lapsed = past "lapsed after".
FOLLOWUP_UPCOMING_DAYS = env.int("FOLLOWUP_UPCOMING_DAYS", default=14)
FOLLOWUP_DUE_WINDOW_DAYS = env.int("FOLLOWUP_DUE_WINDOW_DAYS", default=30)
# Today's tabs count each bucket up to this many rows, then say "1,000+" (issue #7):
# an exact count reads every active follow-up of the user's locations.
WORKLIST_COUNT_CAP = env.int("WORKLIST_COUNT_CAP", default=1000)
# For follow-ups added by hand whose type no rule creates.
FOLLOWUP_DEFAULT_LAPSE_DAYS = 180
FOLLOWUP_DEFAULT_MAX_ATTEMPTS = 3
# "Reached & booked" with no appointment recorded yet: off the worklist this long.
FOLLOWUP_BOOKING_GRACE_DAYS = 7

# Recall dashboard (issue #6): a follow-up booked within this many days after a staff
# contact attempt or a recall message that went out counts as "booked from recall".
REPORTS_ATTRIBUTION_DAYS = env.int("REPORTS_ATTRIBUTION_DAYS", default=14)
