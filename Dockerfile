# paysvc container image. Build: docker build -t paysvc .
# Run (PostgreSQL; secrets must be set explicitly outside SQLite, e.g. as files):
#   docker run -p 8009:8009 -e DATABASE_URL=postgresql://… \
#     -e JWT_SECRET_KEY_FILE=/run/secrets/jwt -e ENCRYPTION_KEY_FILE=/run/secrets/key … paysvc
FROM python:3.11-slim AS build
# uv pinned (the version the lock was made with); bytecode compiled here, so the runtime user
# never needs to write next to the code.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY paysvc ./paysvc
COPY cli ./cli
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --locked --no-dev \
    && .venv/bin/python -m compileall -q paysvc cli migrations

FROM python:3.11-slim
# The code belongs to root (read-only for the service); only /data (SQLite, generated dev
# secrets) is the runtime user's.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent paysvc \
    && mkdir -p /data && chown paysvc:paysvc /data && chmod 0700 /data
WORKDIR /app
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PORT=8009 \
    DATABASE_URL=sqlite:////data/payment_service.db
USER paysvc
EXPOSE 8009
# Liveness only (/health: the process answers); readiness (/health/ready: database and gateway)
# is for the orchestrator. The start period covers migrations at start.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; tls = bool(os.environ.get('TLS_CERT_FILE')); r.urlopen(('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('PORT', '8009') + '/health', timeout=4, context=ssl._create_unverified_context())"]
CMD ["paysvc", "serve"]
