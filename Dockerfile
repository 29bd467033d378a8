# syntax=docker/dockerfile:1
# The MFR platform, CPU image: one image, one command per workload
# (`mfr serve validator`, ..., `mfr db migrate`; see k8s/base).
#
#   docker build -t mfr-platform:0.1.0 .
#
# Two stages: the builder has the compilers and builds a virtual environment;
# the runtime stage copies that environment and has no build tools. Both
# start from the same Python image, so the venv's interpreter path is valid.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# For any dependency without a wheel for this platform (all have one on
# linux/amd64 today).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY . .
# Not `.[local]`: the embedded PostgreSQL and S3 servers are for one machine only.
RUN pip install ".[cpu]" \
 # The root filesystem is read-only at run time: compile now, not on import.
 && python -m compileall -q /opt/venv \
 && mfr --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mfr \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin mfr
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# /tmp is an emptyDir in Kubernetes (read-only root filesystem); caches go there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MFR_HOST=0.0.0.0 \
    MFR_LOG_FORMAT=json
USER 10001:10001
# gRPC 50051-50057, metrics 9101-9107, gateway HTTP 8000.
EXPOSE 8000 50051 50052 50053 50054 50055 50056 50057 9101 9102 9103 9104 9105 9106 9107
ENTRYPOINT ["mfr"]
CMD ["--help"]
