# paysvc container image. Build: docker build -t paysvc .
# Run (PostgreSQL; secrets must be set explicitly outside SQLite):
#   docker run -p 8009:8009 -e DATABASE_URL=postgresql://… -e JWT_SECRET_KEY=… \
#     -e ENCRYPTION_KEY=… -e STRIPE_SECRET_KEY=… -e STRIPE_WEBHOOK_SECRET=… paysvc
FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY paysvc ./paysvc
COPY cli ./cli
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --locked --no-dev

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app paysvc && mkdir -p /data && chown paysvc /data
WORKDIR /app
COPY --from=build --chown=paysvc /app /app
ENV PATH=/app/.venv/bin:$PATH PORT=8009 DATABASE_URL=sqlite:////data/payment_service.db
USER paysvc
EXPOSE 8009
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8009\")}/health/ready')"
CMD ["paysvc", "serve"]
