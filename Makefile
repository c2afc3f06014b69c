# The two commands: `make demo` and `make test`. Each sets up what it needs first
# (scripts/bootstrap.sh: apt packages as root, .venv), and does nothing twice.
.PHONY: demo test bench lint unit integration test-image bootstrap clean

PY := .venv/bin/python

bootstrap:
	@scripts/bootstrap.sh base

demo: bootstrap
	@$(PY) -m clinicam.tools.cli demo $(DEMO_ARGS)

test: bootstrap lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	$(PY) -m ruff check .
	PY=$(PY) scripts/typecheck.sh

unit: bootstrap
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: bootstrap
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

bench: bootstrap
	$(PY) bench/run.py $(BENCH_ARGS)

test-image: bootstrap
	@scripts/bootstrap.sh image
	image-build/test-image.sh

clean:
	rm -rf .venv build *.egg-info bench/results.json
