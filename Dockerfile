# syntax=docker/dockerfile:1
#
# Osteoguard image: `osteoguard serve` on port 8000, as uid 10001, on a read-only root.
#
#   docker build -t osteoguard:0.1.0 \
#       --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#       --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --rm --read-only --tmpfs /tmp -v osteoguard-data:/var/lib/osteoguard \
#       -e OSTEOGUARD_AUTH=off -p 8000:8000 osteoguard:0.1.0
#
# Python 3.12 by default. A 3.13 base works too (--build-arg PYTHON_IMAGE=python:3.13.x-slim-trixie):
# the build stage then compiles durable-rules 2.0.28 with the one flag it needs to import there.
# The base is pinned by version; both stages use the same one, so the venv's interpreter links
# resolve.
ARG PYTHON_IMAGE=python:3.12.15-slim-trixie

# ---------------------------------------------------------------------------------------
# build: durable-rules ships only an sdist, so this stage has gcc. Nothing of it but
# /opt/venv reaches the runtime image.
FROM ${PYTHON_IMAGE} AS build

# Debian package versions are not pinned: the mirror drops old versions, so a pin breaks the
# build within weeks. The pinned base tag fixes the Debian release, and gcc never ships.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from the project's pins, so a code change does not recompile durable-rules.
# On Python 3.13 durable-rules needs CPPFLAGS="-DPyEval_CallObject=PyObject_CallObject" (3.13
# removed that call; its setup.py overwrites CFLAGS, not CPPFLAGS); it is always built from its
# sdist (--no-binary) and never from a cached wheel.
# The list comes from pyproject.toml itself, so it cannot drift from the package metadata.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/deps.txt', 'w').write(chr(10).join(deps))" \
    && CPPFLAGS="$(python -c 'import sys; print("-DPyEval_CallObject=PyObject_CallObject" if sys.version_info >= (3, 13) else "")')" \
       pip install --no-cache-dir --no-binary durable-rules -c constraints.txt -r /tmp/deps.txt

# Then the code. --no-deps: everything it needs is installed above, at the pinned versions.
COPY README.md ./
COPY cds_hooks ./cds_hooks
COPY service ./service
COPY rules ./rules
# The checks run here, where a failure stops the build: the pins hold together, the installed
# C engine imports (-I: not the sources in this folder), and the packaged rule set validates
# (`rules check` without a folder checks the installed one). pip then leaves the venv (16 MB):
# the runtime installs nothing.
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
    && pip check \
    && python -I -c "import durable_rules_engine, service.engine.adapter" \
    && osteoguard rules check \
    && pip uninstall --yes pip

# ---------------------------------------------------------------------------------------
# runtime: the base image plus the venv. No compiler, no apt, no pip run.
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="osteoguard" \
      org.opencontainers.image.description="CDS Hooks 2.0 service: bone-health decision support when anastrozole is prescribed" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.15-slim-trixie"

# A fixed uid/gid (10001) so Kubernetes' runAsUser and file ownership line up. The only
# writable paths are /var/lib/osteoguard (a volume) and /tmp.
RUN groupadd --system --gid 10001 osteoguard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/osteoguard --shell /usr/sbin/nologin osteoguard \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/osteoguard

COPY --from=build /opt/venv /opt/venv

# The default SQLite store lives on the volume, so the root filesystem can be read-only.
# Production sets OSTEOGUARD_DATABASE_URL to PostgreSQL (the Helm chart does, from a Secret).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/osteoguard \
    OSTEOGUARD_DATABASE_URL=sqlite:////var/lib/osteoguard/osteoguard.db
WORKDIR /var/lib/osteoguard
VOLUME ["/var/lib/osteoguard"]

USER 10001:10001
EXPOSE 8000

# Liveness for plain Docker (Kubernetes ignores this and uses the chart's probes). Slim images
# have no curl, so Python's urllib asks; a non-2xx answer raises and the exit code is 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

ENTRYPOINT ["osteoguard"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
