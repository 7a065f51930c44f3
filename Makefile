# The two commands a new user runs first: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench-snli bench-int8 bench-layers bench-heads bench-sparsity clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hf-compress run recipes/minilm-demo.yaml

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

bench-snli: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_snli.py

bench-int8: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_int8.py

bench-layers: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_layers.py

bench-heads: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_heads.py

bench-sparsity: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_sparsity.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
