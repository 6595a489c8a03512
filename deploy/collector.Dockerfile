# The gradwatch collector: ingest, rules, alert API, /metrics. No torch.
# Build from the repository root: docker build -f deploy/collector.Dockerfile .
# Base image checked 2026-11-30 (see docs/stack.md, "Versions").
FROM python:3.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml deploy/pip-deps.py ./
RUN python pip-deps.py collector
# Then the source, installed without touching the dependencies.
COPY README.md ./
COPY gradwatch gradwatch
COPY agent agent
COPY collector collector
COPY trainer trainer
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --create-home gradwatch

USER gradwatch
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5555 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["gradwatch-collector"]
CMD ["--listen", "tcp://0.0.0.0:5555", "--http", "0.0.0.0:8000", "--db", "/data/gradwatch.db"]
