"""docker-compose.yml and the Dockerfile name only things that exist.

No Docker engine runs here or in CI, so the stack is checked from this side: every
command is parsed by the program it runs (Django's, gunicorn's and Celery's own
parsers), every name it mentions is imported or looked up, depends_on is checked
against the services, and the web service's command and healthcheck are run for
real, with the compose environment, on the test PostgreSQL and Redis.
"""

import importlib
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
import environ
import pytest
import yaml
from celery.app.utils import find_app
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from django.conf import settings
from django.core.management import get_commands, load_command_class
from django.db import connection
from django.urls import resolve
from gunicorn.config import Config as GunicornConfig

from practicecrm.celery import app as celery_app

BASE_DIR = Path(settings.BASE_DIR)
COMPOSE_FILE = BASE_DIR / "docker-compose.yml"
DOCKERFILE = BASE_DIR / "Dockerfile"
BIN = Path(sys.executable).parent

REQUIRED_SERVICES = {"postgres", "redis", "web", "worker", "beat"}
# What an operator must provide; everything else has a default in the file.
OPERATOR_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": secrets.token_hex(24),
}
# Programs the app services run, and the pyproject dependency that installs each.
PROVIDED_BY = {"gunicorn": "gunicorn", "celery": "celery"}

_INTERPOLATION = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def substitute(match: re.Match) -> str:
        if match["dollar"]:
            return "$"
        name = match["name"] or match["bare"]
        value, op = env.get(name), match["op"] or ""
        missing = not value if op.startswith(":") else value is None
        if op.endswith("-"):
            return match["arg"] if missing else str(value)
        if op.endswith("?") and missing:
            raise KeyError(f"{name}: {match['arg']}")
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def _resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _resolve(value, env) for key, value in node.items()}
    return node


def load_compose(env: dict[str, str]) -> dict:
    return _resolve(yaml.safe_load(COMPOSE_FILE.read_text()), env)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(OPERATOR_ENV)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def app_services(services: dict[str, dict]) -> dict[str, dict]:
    """The services that run the project's own image."""
    return {name: service for name, service in services.items() if "build" in service}


def command_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    return shlex.split(rest[0]) if kind == "CMD-SHELL" else rest


def depends_on(service: dict) -> dict[str, str]:
    """depends_on as {service: condition}, whichever of compose's two forms is used."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def project_dependencies() -> set[str]:
    pyproject = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())
    return {
        re.split(r"[^A-Za-z0-9_.-]", dep, maxsplit=1)[0].lower()
        for dep in pyproject["project"]["dependencies"]
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_cmd() -> list[str]:
    cmds = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    assert len(cmds) == 1, "the Dockerfile needs exactly one CMD"
    # Exec form (a JSON list), so that signals reach gunicorn rather than a shell.
    return yaml.safe_load(cmds[0])


# --- Checking one command -----------------------------------------------------------


def check_command(argv: list[str]) -> None:
    """Fail unless `argv` would start: the program exists and accepts these arguments."""
    program, args = argv[0], argv[1:]
    if program in PROVIDED_BY:
        assert PROVIDED_BY[program] in project_dependencies(), f"{program} is not a dependency"
        assert (BIN / program).exists()
    if program in ("python", "python3"):
        check_python(args)
    elif program == "gunicorn":
        check_gunicorn(args)
    elif program == "celery":
        check_celery(args)
    else:
        pytest.fail(f"unknown program in an app service: {argv}")


def check_python(args: list[str]) -> None:
    if args[0] == "-c":
        compile(args[1], "<compose healthcheck>", "exec")
        return
    assert args[0] == "manage.py" and (BASE_DIR / "manage.py").exists()
    name, options = args[1], args[2:]
    commands = get_commands()
    assert name in commands, f"manage.py has no command {name!r}"
    command = load_command_class(commands[name], name)
    # Raises CommandError on an unknown option.
    command.create_parser("manage.py", name).parse_args(options)


def gunicorn_options(args: list[str]):
    try:
        return GunicornConfig().parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"gunicorn rejects {args}")


def check_gunicorn(args: list[str]) -> None:
    options = gunicorn_options(args)
    assert len(options.args) == 1, f"gunicorn needs one WSGI app, got {options.args}"
    module_name, _, attribute = options.args[0].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute or "application"))


def check_celery(args: list[str]) -> None:
    assert args[0] in ("-A", "--app"), "celery needs -A first, as in `celery -A practicecrm`"
    app_name, subcommand, *options = args[1:]
    # The same lookup `celery -A` does; it must find the project's one app.
    assert find_app(app_name) is celery_app
    obj = CLIContext(app=celery_app, no_color=True, workdir=None, quiet=True)
    parent = click.Context(celery_cli, info_name="celery", obj=obj)
    command = celery_cli.get_command(parent, subcommand)
    assert command is not None, f"celery has no command {subcommand!r}"
    try:
        command.make_context(subcommand, list(options), parent=parent)
    except click.ClickException as exc:
        pytest.fail(f"celery {subcommand} rejects {options}: {exc.format_message()}")


# --- The compose file -----------------------------------------------------------------


def test_it_defines_the_production_services(services):
    assert set(services) >= REQUIRED_SERVICES
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert {"web", "worker", "beat"} <= set(app_services(services))


def test_it_builds_the_app_services_from_the_dockerfile(services):
    for name, service in app_services(services).items():
        build = service["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert (COMPOSE_FILE.parent / context / (dockerfile or "Dockerfile")) == DOCKERFILE, name


def test_it_runs_real_commands_in_every_app_service(services):
    commands = {name: command_argv(s["command"]) for name, s in app_services(services).items()}
    assert commands["web"][:2] == ["gunicorn", "practicecrm.wsgi"]
    assert commands["worker"][:4] == ["celery", "-A", "practicecrm", "worker"]
    assert commands["beat"][:4] == ["celery", "-A", "practicecrm", "beat"]
    for argv in commands.values():
        check_command(argv)


def test_it_migrates_before_the_app_starts(services):
    migrate = [
        name
        for name, service in app_services(services).items()
        if command_argv(service["command"])[:3] == ["python", "manage.py", "migrate"]
    ]
    assert len(migrate) == 1, "one one-shot service runs the migrations"
    assert services[migrate[0]]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert depends_on(services[name]).get(migrate[0]) == "service_completed_successfully"


def test_it_keeps_depends_on_consistent(services):
    graph = {name: depends_on(service) for name, service in services.items()}
    valid = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, deps in graph.items():
        for target, condition in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in valid, f"{name} → {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} restarts"

    # Nothing waits on itself, directly or round a loop.
    def reaches(start: str, seen: tuple[str, ...] = ()) -> None:
        assert start not in seen, f"depends_on cycle: {' → '.join((*seen, start))}"
        for target in graph[start]:
            reaches(target, (*seen, start))

    for name in graph:
        reaches(name)


def test_it_points_the_app_at_the_compose_database_and_broker(services):
    postgres = services["postgres"]["environment"]
    for name, service in app_services(services).items():
        env = service["environment"]
        db = environ.Env.db_url_config(env["DATABASE_URL"])
        assert db["ENGINE"] == "django.db.backends.postgresql"
        assert (db["HOST"], db["PORT"]) == ("postgres", 5432)
        assert db["NAME"] == postgres["POSTGRES_DB"]
        assert db["USER"] == postgres["POSTGRES_USER"]
        assert db["PASSWORD"] == postgres["POSTGRES_PASSWORD"] == OPERATOR_ENV["POSTGRES_PASSWORD"]
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
        # The app starts only once both answer, not merely once their containers run.
        assert depends_on(service)["postgres"] == "service_healthy", name
        if name != "migrate":
            assert depends_on(service)["redis"] == "service_healthy", name


def test_it_runs_the_app_with_production_settings(services):
    for name, service in app_services(services).items():
        env = service["environment"]
        assert env["DEBUG"] == "false" and env["HTTPS"] == "true", name
        assert env["SECRET_KEY"] == OPERATOR_ENV["SECRET_KEY"]
        assert env["ALLOWED_HOSTS"] and env["EMAIL_URL"]
        assert {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"} <= set(env)


def test_it_sets_only_environment_variables_that_something_reads(services):
    # A misspelt name (ALLOWED_HOST) would silently leave the default in force.
    read_by_settings = set(
        re.findall(r'env(?:\.\w+)?\(\s*"(\w+)"', (BASE_DIR / "practicecrm/settings.py").read_text())
    )
    read_elsewhere = {"WEB_CONCURRENCY", "DJANGO_SETTINGS_MODULE"}  # gunicorn, Django
    for service in app_services(services).values():
        for name in service["environment"]:
            if name.startswith("TWILIO_"):
                continue  # placeholders until SMS sending reads them
            assert name in read_by_settings | read_elsewhere, f"nothing reads {name}"


def test_it_refuses_to_start_without_the_secrets():
    for missing in OPERATOR_ENV:
        env = {k: v for k, v in OPERATOR_ENV.items() if k != missing}
        with pytest.raises(KeyError, match=missing):
            load_compose(env)


def test_it_checks_the_health_of_every_long_running_service_it_can(services):
    assert healthcheck_argv(services["postgres"])[0] == "pg_isready"
    assert healthcheck_argv(services["redis"])[:2] == ["redis-cli", "ping"]
    worker_check = healthcheck_argv(services["worker"])
    assert worker_check[:5] == ["celery", "-A", "practicecrm", "inspect", "ping"]
    check_command(worker_check)
    web_check = healthcheck_argv(services["web"])
    check_command(web_check)
    # The web check asks gunicorn's own port for /healthz, published on the same port.
    bind = gunicorn_options(command_argv(services["web"]["command"])[1:]).bind
    port = bind[0].rsplit(":", 1)[1]
    url = re.search(r'"(http://127\.0\.0\.1:(\d+)(/\S*))"', web_check[2])
    assert url and url[2] == port
    assert resolve(url[3]).url_name == "healthz"
    assert any(str(p).endswith(f":{port}") for p in services["web"]["ports"])


# --- The Dockerfile -------------------------------------------------------------------


def test_it_builds_a_non_root_image_with_the_project_dependencies():
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    pyproject = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"].startswith(">=3.11")
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in runs)
    collect = next(run for run in runs if "collectstatic" in run)
    check_python(shlex.split(collect)[1:])
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (BASE_DIR / source).exists(), f"COPY of missing {source}"
    # The last USER is not root and comes after every RUN, so the app never runs as root.
    user_at = max(i for i, k in enumerate(keywords) if k == "USER")
    user = instructions[user_at][1]
    assert user not in ("root", "0")
    assert all(i < user_at for i, k in enumerate(keywords) if k == "RUN")
    assert any(re.search(rf"\buseradd\b.*\s{user}$", run) for run in runs)


def test_it_starts_gunicorn_by_default_like_the_web_service(services):
    cmd = dockerfile_cmd()
    check_command(cmd)
    assert cmd == command_argv(services["web"]["command"])
    exposed = [rest for keyword, rest in dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == [gunicorn_options(cmd[1:]).bind[0].rsplit(":", 1)[1]]


def test_it_keeps_local_state_and_secrets_out_of_the_image():
    ignored = set((BASE_DIR / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "var", "staticfiles"} <= ignored


# --- Running the web service here --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_database_url() -> str:
    db = connection.settings_dict
    assert connection.vendor == "postgresql", "run through `make test` (PostgreSQL)"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def local_web_env(services, db) -> dict[str, str]:
    """The web service's environment, with the database and Redis of this test run."""
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "run through `make test` (Redis)"
    env = {
        **services["web"]["environment"],
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.CELERY_BROKER_URL,
        "PATH": f"{BIN}:/usr/bin:/bin",
    }
    return {name: str(value) for name, value in env.items()}


def test_it_passes_check_deploy_with_the_compose_environment(local_web_env):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=local_web_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_it_serves_healthz_to_the_compose_healthcheck(services, local_web_env):
    port = _free_port()
    argv = command_argv(services["web"]["command"])
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=BASE_DIR,
        env={**local_web_env, "WEB_CONCURRENCY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        assert server.poll() is None, "gunicorn exited"
        check = healthcheck_argv(services["web"])
        code = check[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert code != check[2]
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=local_web_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "Booting worker" in output
