# The one production image: docker-compose.yml runs web (gunicorn), the Celery
# worker, Celery beat and the migrate step from it, each with its own command.
# tests/test_docker.py checks that what this file names exists.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=practicecrm.settings

WORKDIR /app

# Dependencies first, from pyproject.toml alone: the project itself is not a
# package ([tool.setuptools] packages = []), so `pip install .` installs exactly
# the runtime dependencies, and this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN pip install . && rm -rf build ./*.egg-info

COPY . .

# Static files are collected into the image; WhiteNoise serves them from
# STATIC_ROOT. The embedded defaults suffice here: collectstatic opens no database.
RUN python manage.py collectstatic --noinput -v0

# The processes run as an unprivileged user that cannot change the code or the
# collected static files (both stay owned by root).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app
USER app

EXPOSE 8000

# /dev/shm for gunicorn's worker heartbeat files: a container's /tmp may sit on a
# slow overlay filesystem. WEB_CONCURRENCY (read by gunicorn) sets the workers.
CMD ["gunicorn", "practicecrm.wsgi", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/dev/shm", "--access-logfile", "-"]
