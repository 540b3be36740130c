# PracticeCRM — `make run` and `make test` are the two commands in the README.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/practicecrm
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# `make serve` runs a local Twilio (manage.py twilio_sim) on this port. Without a
# TWILIO_ACCOUNT_SID of your own, the app's SDK talks to it with these dev values.
TWILIO_SIM_PORT ?= 8026
TWILIO_DEV_ACCOUNT_SID := AC00000000000000000000000000000000
TWILIO_DEV_AUTH_TOKEN := dev-twilio-auth-token

.PHONY: install run setup demo serve test lint format browser bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## make run: install, migrate, load demo data, then web server + Celery worker + beat.
run: setup demo serve

setup: install
	@mkdir -p var/celery/queue var/celery/processed var/celery/control
	@$(PY) manage.py migrate --noinput -v0
	@$(PY) manage.py collectstatic --noinput -v0

demo: setup
	@$(PY) manage.py seed_demo

serve:
	@trap 'kill 0' INT TERM EXIT; \
	export SITE_URL=$${SITE_URL:-http://$(HOST):$(PORT)}; \
	if [ -z "$$TWILIO_ACCOUNT_SID" ] && ! grep -qs '^TWILIO_ACCOUNT_SID=.' .env; then \
	  export TWILIO_ACCOUNT_SID=$(TWILIO_DEV_ACCOUNT_SID) TWILIO_AUTH_TOKEN=$(TWILIO_DEV_AUTH_TOKEN) \
	    TWILIO_API_BASE_URL=http://127.0.0.1:$(TWILIO_SIM_PORT) \
	    TWILIO_WEBHOOK_BASE_URL=http://$(HOST):$(PORT); \
	  sms="SMS go to it"; \
	else sms="SMS go to the real Twilio (TWILIO_ACCOUNT_SID is set)"; fi; \
	echo "PracticeCRM on http://$(HOST):$(PORT)/  (Ctrl-C stops web, worker, beat and the local Twilio)"; \
	echo "Local Twilio on http://127.0.0.1:$(TWILIO_SIM_PORT)/  ($$sms)"; \
	$(PY) manage.py twilio_sim --port $(TWILIO_SIM_PORT) --app-url http://$(HOST):$(PORT) & \
	$(BIN)/celery -A practicecrm worker --loglevel=INFO --concurrency=2 --without-mingle --without-gossip & \
	$(BIN)/celery -A practicecrm beat --loglevel=INFO & \
	$(BIN)/gunicorn practicecrm.wsgi --bind $(HOST):$(PORT) --workers 2 --access-logfile - ; \
	wait

## make test: the whole suite on PostgreSQL and Redis, browser test included.
test: install browser
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  $(BIN)/pytest -q $(PYTEST_ARGS)

# Debian's chromium drives the real-browser test; installed when missing and we may.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: 'sudo apt-get install chromium' to run the browser test"; fi; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=sqlite:///:memory: $(BIN)/mypy locations patients followups reminders imports practicecrm reports
	DATABASE_URL=sqlite:///:memory: $(PY) manage.py makemigrations --check --dry-run -v0

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make bench: issue #7's benchmarks on PostgreSQL + Redis, in databases of their own
## (practicecrm_bench and practicecrm_bench_<SCALE>x); `make bench SCALE=10` for 10×.
## Writes bench/results/*.json and *.md. Benchmarks report; they never fail CI.
SCALE ?= 1
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/practicecrm_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/9
bench: install
	BENCH_DATABASE_URL=$(BENCH_DATABASE_URL) REDIS_URL=$(BENCH_REDIS_URL) \
	  $(PY) benchmarks/run.py --scale $(SCALE) $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) var staticfiles
