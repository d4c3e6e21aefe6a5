# The two commands of the README:
#   make demo   set up .venv and run the main job on the embedded default data
#   make test   set up .venv, lint the tree, run the whole test suite
# Both create their own virtual environment (Python 3.11 when available).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo
# loadgroup: tests marked xdist_group (the shared tiny demo's two, and
# modules whose tests share fixtures and compiled programs) run on one
# worker.
PYTEST_ARGS ?= -n auto --dist loadgroup

.PHONY: demo test lint venv protos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m experiments.main --config=experiments/configs/demo.py --workdir=$(WORKDIR)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff, configured in pyproject.toml ([tool.ruff]); `ruff check --fix .`
# mends what it can.
lint: $(STAMP)
	$(BIN)/python -m ruff check .

# Regenerate prefalign/data/protos/*_pb2.py after editing a .proto file.
protos: $(STAMP)
	$(BIN)/python -m prefalign.data.protos.generate

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
