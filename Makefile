# The two commands: `make demo` and `make test`. Each sets up what it needs first
# (scripts/bootstrap.sh: apt packages as root, .venv), and does nothing twice.
.PHONY: demo test bench lint unit integration test-image test-update bundle deb bootstrap clean

PY := .venv/bin/python

bootstrap:
	@scripts/bootstrap.sh base

demo: bootstrap
	@$(PY) -m clinicam.tools.cli demo $(DEMO_ARGS)

# The suite includes tests/unit/test_protocol_mutants.py: each protocol builder/parser broken
# in turn (in memory), the other side's targeted tests must fail (scripts/protocol_mutants.py).
test: bootstrap lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	$(PY) -m ruff check .
	PY=$(PY) scripts/typecheck.sh
	promtool check rules docs/prometheus/clinicam-alerts.yml
	cd docs/prometheus && promtool test rules clinicam-alerts.test.yml

unit: bootstrap
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: bootstrap
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

bench: bootstrap
	$(PY) bench/run.py $(BENCH_ARGS)

test-image: bootstrap
	@scripts/bootstrap.sh image
	image-build/test-image.sh

# The update boot test: A/B slots, signed bundles, refusals, rollback (image-build/README.md).
test-update: bootstrap
	@scripts/bootstrap.sh image
	image-build/test-update.sh

# A signed RAUC bundle of a station root (default: the stand-in's, from make test-image).
# Release: BUNDLE_ROOTFS=<rpi-image-gen's root> and CLINICAM_UPDATE_CERT/KEY/KEYRING.
BUNDLE_ROOTFS ?= image-build/work/amd64/rootfs
BUNDLE_OUT ?= image-build/work/clinicam-station.raucb
bundle: bootstrap
	image-build/bundle.sh --rootfs $(BUNDLE_ROOTFS) --out $(BUNDLE_OUT)

deb: bootstrap
	scripts/build-deb.sh

clean:
	rm -rf .venv build *.egg-info bench/results.json
