# The gradwatch collector: ingest, rules, alert API, /metrics. No torch.
# Build from the repository root: docker build -f deploy/collector.Dockerfile .
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gradwatch gradwatch
COPY agent agent
COPY collector collector
COPY trainer trainer
RUN pip install ".[collector]" \
    && useradd --system --uid 10001 --home-dir /data --create-home gradwatch

USER gradwatch
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5555 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["gradwatch-collector"]
CMD ["--listen", "tcp://0.0.0.0:5555", "--http", "0.0.0.0:8000", "--db", "/data/gradwatch.db"]
