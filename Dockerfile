# syntax=docker/dockerfile:1
# The control plane image:  docker build -t controlplane:0.1.0 .
#
# Two stages on the same slim Python base: the builder makes a wheel of this project and
# installs it with its dependencies into a virtualenv; the final image holds only that
# virtualenv (no compiler, pip, cache or source tree). It runs as a non-root user and
# writes nothing at runtime, so a read-only root filesystem works (give it a writable
# /tmp only if you pass a kubeconfig with inline certificates: the Kubernetes client
# writes them to temporary files).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python -m venv /opt/controlplane
# Dependencies in a layer of their own, so a code change does not download them again.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
 && /opt/controlplane/bin/pip install -r requirements.txt
COPY controlplane ./controlplane
RUN /opt/controlplane/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/controlplane/bin/pip install --no-deps /wheels/controlplane-*.whl \
 && /opt/controlplane/bin/pip uninstall --yes pip

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="controlplane" \
      org.opencontainers.image.description="A lightweight xDS control plane for Envoy, with Istio's semantics and names"
RUN groupadd --system --gid 10001 controlplane \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin controlplane
COPY --from=builder /opt/controlplane /opt/controlplane
# Bytecode was compiled at install time; nothing is written at runtime.
ENV PATH=/opt/controlplane/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# xDS (Envoys connect here), the admin gRPC API (proxy-status), HTTP (/healthz, /readyz,
# /metrics, /debug/*).
EXPOSE 15010 15011 15014
# slim has no curl: the interpreter of the image asks /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15014/healthz', timeout=2)"]
ENTRYPOINT ["controlplane"]
# All three on 0.0.0.0, not the loopback defaults of `controlplane serve`: inside a
# container, loopback is the container's own, unreachable from Envoys in other containers,
# from published ports and from Kubernetes probes. (The Kubernetes Deployment puts the admin
# API back on loopback, for `kubectl port-forward`.) With no source given, a pod uses its
# in-cluster config, so this runs as is in Kubernetes. Arguments to `docker run` replace
# the whole CMD: repeat these addresses (keep HTTP on 15014, which the HEALTHCHECK asks)
# and add a source, e.g. `serve --config-dir /config ...` as docker-compose.yml does.
CMD ["serve", "--xds-address", "0.0.0.0:15010", "--admin-address", "0.0.0.0:15011", "--http-address", "0.0.0.0:15014"]
