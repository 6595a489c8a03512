# The demo trainer (small GPT on the shipped corpus) with the gradwatch agent, CPU torch.
# Build from the repository root: docker build -f deploy/trainer.Dockerfile .
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.5.1"
COPY pyproject.toml README.md ./
COPY gradwatch gradwatch
COPY agent agent
COPY collector collector
COPY trainer trainer
RUN pip install ".[agent]" \
    && useradd --system --uid 10002 --create-home trainer

USER trainer
ENTRYPOINT ["python", "-m", "gradwatch.trainer"]
CMD ["--endpoint", "tcp://collector:5555", "--run", "demo", "--steps", "2000"]
