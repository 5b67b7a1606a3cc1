# syntax=docker/dockerfile:1
# The hpchub operator: `hpchub operator`, settings from HPCHUB_* (charts/hpchub sets them).
# Build from the repository root:  docker build -f docker/operator.Dockerfile -t hpchub/operator:dev .
ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY hub ./hub
RUN python -m venv /opt/hpchub \
 && /opt/hpchub/bin/pip install --no-compile . \
 && find /opt/hpchub -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hpchub-operator" \
      org.opencontainers.image.source="https://github.com/hpchub/hpchub" \
      org.opencontainers.image.licenses="BSD-3-Clause"
# openssh-client: the SSH backend runs `ssh` with one-shot user certificates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hpchub \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin hpchub
COPY --from=build /opt/hpchub /opt/hpchub
ENV PATH=/opt/hpchub/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001:10001
EXPOSE 8080 8081 9090 9443
ENTRYPOINT ["hpchub"]
CMD ["operator"]
