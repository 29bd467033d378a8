# syntax=docker/dockerfile:1
# The MFR platform, CPU image: one image, one command per workload
# (`mfr serve validator`, ..., `mfr db migrate`; see k8s/base).
#
#   make images-cpu        # buildah; docs/images.md
#   docker build -t mfr-platform:0.1.0 .
#
# Two stages: the builder installs requirements/cpu.lock (exact versions, every
# file checked against its hash) into a virtual environment; the runtime stage
# copies that environment. Both start from the same base, so the venv's
# interpreter path is valid. BASE_IMAGE is any Python 3.11 on Debian bookworm
# (make images builds one with debootstrap where no registry answers).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1
WORKDIR /src
COPY requirements/ requirements/
# uv by hash, in a venv of its own, then the lock into /opt/venv: wheels only
# (--no-build: no compiler in the image, no source build that could differ).
# build-ca: the CA of a TLS-re-signing proxy, as a build secret (never in a layer).
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then \
      export SSL_CERT_FILE=/run/secrets/build-ca PIP_CERT=/run/secrets/build-ca; fi \
 && python -m venv /opt/uv \
 && /opt/uv/bin/pip install --quiet --require-hashes --no-deps -r requirements/bootstrap.lock \
 && python -m venv --without-pip /opt/venv \
 && /opt/uv/bin/uv pip sync --quiet --python /opt/venv/bin/python --require-hashes --no-build \
        requirements/cpu.lock
COPY pyproject.toml README.md ./
COPY mfr/ mfr/
COPY services/ services/
COPY gateway/ gateway/
COPY cli/ cli/
# The project itself, with the locked setuptools; not `.[local]`: the embedded
# PostgreSQL and S3 servers are for one machine only. The root filesystem is
# read-only at run time: compile now, not on import.
RUN /opt/uv/bin/uv pip install --quiet --python /opt/venv/bin/python --no-deps \
        --no-build-isolation --offline . \
 && /opt/venv/bin/python -m compileall -q /opt/venv \
 && /opt/venv/bin/mfr --help >/dev/null

FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mfr \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin mfr
COPY --from=builder /opt/venv /opt/venv
# Participants' models run under a seccomp filter made with the system's libseccomp
# (Debian's libseccomp2: apt depends on it, so every bookworm base has it).
RUN /opt/venv/bin/python -c "import pyseccomp; pyseccomp.SyscallFilter(pyseccomp.ALLOW)"
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
