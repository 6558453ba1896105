# syntax=docker/dockerfile:1
#
# The broker image the Helm chart (helm/tunnel-broker) runs.
#
#   docker build -t tunnel-broker:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/apps.toml:/etc/tunnel-broker/apps.toml:ro" \
#       -e TB_APPS_FILE=/etc/tunnel-broker/apps.toml -e TB_SECRET_KEY=... tunnel-broker:0.1.0
#
# Two stages: the first installs the package into a virtualenv (pip, build backends and
# caches stay behind), the second copies only that virtualenv onto the same slim base,
# so the venv's interpreter link stays valid. Every dependency ships manylinux wheels for
# amd64 and arm64: no compiler in either stage. The image holds no credentials: the
# signing key, Redis URL and apps come from the environment and mounted files at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/tunnel-broker
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a code change then reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/tunnel-broker/bin/pip install -r /tmp/requirements.txt
COPY tunnel_broker ./tunnel_broker
# Not editable: the package is copied into the venv (and byte-compiled there, since the
# root filesystem is read-only at run time).
RUN /opt/tunnel-broker/bin/pip install --no-deps . \
    && /opt/tunnel-broker/bin/tunnel-broker --version

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tunnel-broker" \
      org.opencontainers.image.description="Self-hosted WebSocket tunnel broker" \
      org.opencontainers.image.licenses="MIT"
# A fixed numeric id, so Kubernetes can check runAsNonRoot without a passwd lookup and
# the chart's runAsUser/fsGroup (10001) match the image.
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin broker
COPY --from=build /opt/tunnel-broker /opt/tunnel-broker
ENV PATH=/opt/tunnel-broker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TB_HOST=0.0.0.0 \
    TB_PORT=8080
USER 10001:10001
WORKDIR /opt/tunnel-broker
EXPOSE 8080
# SIGTERM starts the broker's drain (unready, 1012 to clients, webhook flush).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tunnel-broker"]
CMD ["serve"]
