# The two commands a new user runs first: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-eco bench-snli bench-int8 bench-layers bench-heads bench-sparsity bench-heal \
	bench-heal-gpu clean

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

# torchao / optimum-quanto baselines run from a side venv that sees ours through a .pth file: in the main
# venv, transformers would import torchao on every model load.
BASE_VENV ?= /tmp/hf_compress_basevenv
# the ONNX Runtime baseline (scripts/ort_baseline.py) has a side venv of its own, pinned, --no-deps
ORT_VENV ?= /tmp/hf_compress_ortvenv
ORT_PKGS := onnx==1.23.2 onnxruntime==1.31.1 protobuf==7.36.2 ml-dtypes==0.6.0 flatbuffers==25.12.19
bench-int8: $(STAMP)
	test -x $(BASE_VENV)/bin/python || $(PYTHON) -m venv $(BASE_VENV)
	$(PY) -c "import site; print(site.getsitepackages()[0])" \
		> "$$($(BASE_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/hf_compress_main.pth"
	$(BASE_VENV)/bin/python -m pip install -q --no-deps torchao==0.18.0 optimum-quanto==0.2.7
	HF_HUB_OFFLINE=1 PYTHONPATH=$(CURDIR) $(BASE_VENV)/bin/python scripts/bench_int8.py
	test -x $(ORT_VENV)/bin/python || $(PYTHON) -m venv $(ORT_VENV)
	$(PY) -c "import site; print(site.getsitepackages()[0])" \
		> "$$($(ORT_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/hf_compress_main.pth"
	$(ORT_VENV)/bin/python -m pip install -q --no-deps $(ORT_PKGS)
	HF_HUB_OFFLINE=1 PYTHONPATH=$(CURDIR) $(ORT_VENV)/bin/python scripts/bench_int8_latency.py --ort

# compressed-tensors lives in a side environment (installed next to our loader it would take over
# from_pretrained); this checks our int8 checkpoints tensor by tensor against what that library writes.
CT_VENV ?= /tmp/hf_compress_ctvenv
.PHONY: test-ct
test-ct: $(STAMP)
	test -x $(CT_VENV)/bin/python || $(PYTHON) -m venv $(CT_VENV)
	$(PY) -c "import site; print(site.getsitepackages()[0])" \
		> "$$($(CT_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/hf_compress_main.pth"
	$(CT_VENV)/bin/python -m pip install -q --no-deps compressed-tensors==0.20.1 loguru==0.7.3
	HF_HUB_OFFLINE=1 HF_COMPRESS_CT_PYTHON=$(CT_VENV)/bin/python $(PY) -m pytest -q \
		tests/methods/int8/test_loader.py -k compressed_tensors_library

# sentence-transformers and peft live in a side environment too: installed in the main venv, transformers'
# Trainer and from_pretrained change behaviour when peft is importable. Pinned, --no-deps; it sees ours by a .pth.
ECO_VENV ?= /tmp/hf_compress_ecovenv
ECO_PKGS := sentence-transformers==6.2.0 peft==0.21.2 scikit-learn==1.9.1 scipy==1.17.1 joblib==1.6.0 \
	threadpoolctl==3.8.0 cloudpickle==3.1.3 narwhals==2.29.0
test-eco: $(STAMP)
	test -x $(ECO_VENV)/bin/python || $(PYTHON) -m venv $(ECO_VENV)
	$(PY) -c "import site; print(site.getsitepackages()[0])" \
		> "$$($(ECO_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/hf_compress_main.pth"
	$(ECO_VENV)/bin/python -m pip install -q --no-deps $(ECO_PKGS)
	HF_HUB_OFFLINE=1 PYTHONPATH=$(CURDIR) $(ECO_VENV)/bin/python -m pytest -q tests/ecosystem

bench-layers: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_layers.py

bench-heads: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_heads.py

bench-sparsity: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_sparsity.py

bench-width: $(STAMP)
	HF_HUB_OFFLINE=1 flock /tmp/bench.lock $(PY) scripts/bench_width.py

# SmolLM2 healing after compression: distillation vs plain LM fine-tuning at the same budget
# (benchmarks/heal.md; `--quick` / `--tiny` write to a temporary file unless given --output)
bench-heal: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_heal.py

# the same on a GPU (bf16, 16 x 512-token steps, 3000 steps); needs a CUDA build of torch in $(VENV)
bench-heal-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench_heal.py --device cuda

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
