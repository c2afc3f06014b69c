#!/bin/sh
# mypy over the import names (clinicam.firmware.…), not the folder names.
#
# Why: the folders are mapped to clinicam.* by setuptools' package-dir, which the
# editable install serves through an import hook that mypy cannot follow. Checked as
# `mypy firmware relay …`, every `from clinicam.… import` was silently missing (Any,
# under ignore_missing_imports), so no type crossed a module boundary. A tree of
# symlinks named like the import packages gives mypy the real modules.
set -eu
cd "$(dirname "$0")/.."
root=.mypy-path
mkdir -p "$root/clinicam"
for d in common protocol drivers provisioning firmware relay tools; do
    ln -sfn "../../$d" "$root/clinicam/$d"
done
MYPYPATH="$root" exec "${PY:-.venv/bin/python}" -m mypy \
    -p clinicam.common -p clinicam.protocol -p clinicam.drivers -p clinicam.provisioning \
    -p clinicam.firmware -p clinicam.relay -p clinicam.tools "$@"
