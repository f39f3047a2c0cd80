# lit_regression: `make run` trains the default config, `make test` runs the tests; both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/line_linear.yaml
RUNS ?= runs

.PHONY: setup run test test-fast fuzz bench tensorboard docs clean

setup: $(STAMP)

# Re-installs when the venv is missing or the package's requirements or pins changed.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,deploy]'
	touch $(STAMP)

run: setup
	$(BIN)/lit-regression fit --config $(CONFIG) --trainer.default_root_dir $(RUNS)

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# random tables through the CLI and the Python API (tests/test_fuzz.py), far more of them than `make test` runs
FUZZ_EXAMPLES ?= 2000
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_fuzz.py \
		--hypothesis-show-statistics -p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/run.py

tensorboard: setup
	@echo "TensorBoard on http://127.0.0.1:6006 ; the losses on one chart: http://127.0.0.1:6006/#custom_scalars"
	$(BIN)/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port 6006

# the reference pages of docs/ as a site, in site/ (mkdocs with the material theme, the `docs` extra)
docs: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[docs]'
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache site
