# syntax=docker/dockerfile:1
# wa-archive: one image for the three services and the CLI.
#   docker build -t wa-archive:0.1.0 .
#   docker run wa-archive:0.1.0 services.archiver        # ENTRYPOINT is `python -m`
#   docker run --entrypoint wa-archive wa-archive:0.1.0 retention run --dry-run
# Pin the base image by digest in your registry mirror for reproducible builds (PYTHON_IMAGE=python:3.11-slim@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: wheels of the project and of every dependency, at the versions of constraints.txt ----------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY services ./services
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

# ---- runtime: no compiler, no sources, no pip; a non-root user -------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# The root filesystem is read-only in Kubernetes: no bytecode written at run time, and anything that wants a home
# directory writes to the /tmp emptyDir. PYTHONSAFEPATH: the working directory (/tmp) is never on sys.path.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp
# What the PDF transcripts draw with (services/evidence/pdf.py: WeasyPrint over Pango; fontconfig falls back to the
# Noto emoji and CJK fonts for what DejaVu lacks): shared libraries and fonts only, the same packages as the local
# stack's (deploy/local/stack.sh PDF_PACKAGES, less poppler-utils, which only the tests use). Without them an export
# job asked for a PDF fails in the cluster while it passes on a developer's machine.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends \
       libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core fonts-noto-color-emoji fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*
# Installed from the builder's wheels only (no index: nothing is resolved again), then pip itself is removed.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels wa-archive \
    && pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 wa-archive \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin wa-archive
USER 10001:10001
WORKDIR /tmp
# ingest 8080, archiver metrics/health 8081, retention admin API 8082. No HEALTHCHECK: Kubernetes probes
# /healthz and /readyz (deploy/k8s), deploy/compose.yaml declares its own.
EXPOSE 8080 8081 8082 8083 9083
ENTRYPOINT ["python", "-m"]
CMD ["services.ingest"]
