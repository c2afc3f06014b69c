"""Break one function in this Python process: ``scripts/protocol_mutants.py`` puts this folder
on ``PYTHONPATH`` and names the function in ``CLINICAM_MUTANT`` (``module:qualname``).

The function's code becomes ``raise NotImplementedError``: every reference to it (a
method looked up on its class, a function imported by name before or after) is broken,
in the test process and in every Python process the tests start. ``CLINICAM_MUTANT_MARK``
names a file that records that the mutant was applied, so a run in which it silently
was not cannot pass for a caught one. Not for production: it exists for that script only.
"""

from __future__ import annotations

import importlib
import os


def _broken(*_args: object, **_kwargs: object) -> None:
    raise NotImplementedError("mutant")


def _apply(target: str) -> None:
    module_name, qualname = target.split(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError:  # another interpreter (e.g. the FHIR server's venv): not ours to break
        return
    *owners, name = qualname.split(".")
    for owner in owners:
        obj = getattr(obj, owner)
    raw = next(vars(k)[name] for k in getattr(obj, "__mro__", (obj,)) if name in vars(k))
    func = getattr(raw, "__func__", raw)  # a classmethod's or staticmethod's function
    func.__code__ = _broken.__code__
    mark = os.environ.get("CLINICAM_MUTANT_MARK")
    if mark:
        with open(mark, "a") as f:
            f.write(f"mutant applied: {target}\n")


if os.environ.get("CLINICAM_MUTANT"):
    _apply(os.environ["CLINICAM_MUTANT"])
