# cams-proxy image: the gateway (`serve`, the default) and the CAMS simulator (`simulate`).
#   docker build -t cams-proxy:local .
#   docker run --rm -p 8080:8080 -e ALIBABA_CLOUD_ACCESS_KEY_ID=... -e ALIBABA_CLOUD_ACCESS_KEY_SECRET=... cams-proxy:local
# docker-compose.yml runs the whole topology (Redis, simulator, three gateways, nginx) with its health checks.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtualenv holding the pinned dependencies, then the project itself
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/cams-proxy
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when the pins or the dependency list change).
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && /opt/cams-proxy/bin/pip install -c requirements/constraints.txt -r /tmp/requirements.txt
COPY proxy ./proxy
RUN /opt/cams-proxy/bin/pip install --no-deps . \
 && /opt/cams-proxy/bin/python -c "import proxy.web.app, proxy.simulator.app"

# ---- runtime: the virtualenv only, run by an unprivileged user
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 cams \
 && useradd --system --uid 10001 --gid cams --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cams
COPY --from=build /opt/cams-proxy /opt/cams-proxy
ENV PATH=/opt/cams-proxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROXY_HOST=0.0.0.0 \
    SIM_HOST=0.0.0.0
WORKDIR /srv
# Numeric, so that runtimes enforcing "non-root" can check it.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "proxy"]
CMD ["serve"]
