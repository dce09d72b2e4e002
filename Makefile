# cams-proxy: the two commands are `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help venv run cluster simulate test test-unit lint format bench redis nginx node-clients compose clean

help:
	@echo "make run    - set up .venv and start the main job on embedded defaults"
	@echo "make test   - set up .venv, redis-server, nginx, the Node.js SDKs (tests/node) and docker-compose, run the whole suite"
	@echo "make cluster - docker-compose.yml's topology as local processes: Redis, simulator, 3 gateways, nginx"
	@echo "make lint   - ruff + mypy on proxy/"
	@echo "make bench  - run the benchmarks and write docs/benchmarks.md"

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cams-proxy needs Python >= 3.11 (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: venv
	@scripts/run.sh

cluster: venv redis nginx
	@scripts/cluster.sh

simulate: venv
	$(PY) -m proxy simulate

redis:
	@scripts/ensure-redis.sh

nginx:
	@scripts/ensure-nginx.sh

node-clients:
	@scripts/ensure-node-clients.sh

compose:
	@scripts/ensure-compose.sh

test: venv redis nginx node-clients compose
	$(PY) -m pytest -q

test-unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check proxy tests bench
	$(VENV)/bin/mypy proxy

format: venv
	$(VENV)/bin/ruff check --fix proxy tests bench

bench: venv redis
	$(PY) -m bench

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info .cluster
