# Two entry points: `make demo` (the main job on Fashion-MNIST, quick preset) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DEBIAN := /usr/share/datasets/fashion-mnist
DEMO_METHODS ?= oracle,proden
DEMO_SEEDS ?= 0

.PHONY: setup data demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 || $(PY) -m pip install -q 'torch>=2.4' 'torchvision>=0.19'
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian's dataset-fashion-mnist when apt is usable; otherwise the demo downloads through torchvision.
data:
	@if [ -d $(FMNIST_DEBIAN) ]; then echo "Fashion-MNIST: $(FMNIST_DEBIAN)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "apt failed: will use --download"; \
	else echo "no apt: the demo will download Fashion-MNIST into ./data"; fi

demo: setup data
	@DL=$$([ -d $(FMNIST_DEBIAN) ] || echo "--download --data-root data"); \
	$(VENV)/bin/pllbench candidates --dataset fmnist --preset demo $$DL && \
	$(VENV)/bin/pllbench run --methods $(DEMO_METHODS) --dataset fmnist --preset demo --seeds $(DEMO_SEEDS) \
	    --workers 2 $$DL

test: $(VENV)/.installed-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/step_ratio.py --methods dirk --preset smoke
