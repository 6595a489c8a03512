# The demo trainer (small GPT on the shipped corpus) with the gradwatch agent, CPU torch.
# Build from the repository root: docker build -f deploy/trainer.Dockerfile .
# Base image and torch checked 2026-11-30 (see docs/stack.md, "Versions").
FROM python:3.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# torch first (the CPU build, the largest layer), then the other dependencies: both layers are
# rebuilt only when this line or pyproject.toml changes.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml deploy/pip-deps.py ./
RUN python pip-deps.py agent
# Then the source, installed without touching the dependencies.
COPY README.md ./
COPY gradwatch gradwatch
COPY agent agent
COPY collector collector
COPY trainer trainer
RUN pip install --no-deps . \
    && useradd --system --uid 10002 --create-home trainer

USER trainer
ENTRYPOINT ["python", "-m", "gradwatch.trainer"]
CMD ["--endpoint", "tcp://collector:5555", "--run-name", "demo", "--steps", "2000"]
