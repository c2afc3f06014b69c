"""Typed, validated TOML configuration: frozen dataclasses in, clear messages out.

The station's and the relay's configurations are trees of frozen dataclasses. This
module turns a parsed TOML document into such a tree, refusing anything it does not
understand: an unknown key, a wrong type (``true`` where a number belongs — TOML keeps
them apart, Python's ``bool`` does not), or a value a field's check rejects. Every
message names the file, the section, the key and the problem, in the form

    station.toml: [uplink] port: must be 1..65535, got 0

so an engineer editing ``/etc/clinicam/station.toml`` over SSH knows what to fix.
Values in messages are shown with ``repr`` and cut short; configuration holds no PHI.

A field's check lives in its metadata: ``field(default=…, metadata=checked(between(1,
65535)))``. A tuple of dataclasses is a TOML array of tables; a field marked with
``variants(tag, {value: cls})`` picks the dataclass by the ``tag`` key of each table.
The relay imports this module: it holds no station logic.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from clinicam.common.errors import ConfigError

T = TypeVar("T")
Check = Callable[[Any], str | None]  # returns a complaint ("must be …") or None


# --- checks ---------------------------------------------------------------------------


def checked(*checks: Check) -> dict[str, Any]:
    """Field metadata carrying validation checks, run in order after the type check."""
    return {"checks": checks}


def variants(tag: str, table: Mapping[str, type]) -> dict[str, Any]:
    """Field metadata for an array of tables whose ``tag`` key selects the dataclass."""
    return {"variants": (tag, dict(table))}


def between(lo: float, hi: float) -> Check:
    def _check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be {lo}..{hi}"

    return _check


def at_least(lo: float) -> Check:
    def _check(v: Any) -> str | None:
        return None if v >= lo else f"must be at least {lo}"

    return _check


def matches(pattern: str, what: str) -> Check:
    compiled = re.compile(pattern)

    def _check(v: Any) -> str | None:
        return None if compiled.fullmatch(v) else f"must be {what}"

    return _check


def nonempty(v: Any) -> str | None:
    return None if v else "must not be empty"


def absolute_path(v: Any) -> str | None:
    return None if v == "" or v.startswith("/") else "must be an absolute path"


def regex(v: Any) -> str | None:
    try:
        re.compile(v)
    except re.error as exc:
        return f"must be a valid regular expression ({exc.msg})"
    return None


# --- loading --------------------------------------------------------------------------


def load_file(path: Path | str, cls: type[T], *, example: str, kind: str) -> T:
    """Read ``path`` as TOML into ``cls``; ``example`` is where to copy a template from."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no {kind} configuration here. Create one from the annotated example "
            f"({example}), e.g. `install -m 0644 {example} {path}`, or pass --config PATH."
        ) from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read (permission denied); check its owner and mode") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the {kind} configuration file (--config PATH)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from None
    return load_mapping(data, cls, source=path.name)


def load_mapping(data: Mapping[str, Any], cls: type[T], *, source: str) -> T:
    """Build ``cls`` from an already parsed mapping (tests, defaults, embedded configs)."""
    return _build(cls, data, _Where(source, ()))


@dataclasses.dataclass(frozen=True)
class _Where:
    source: str
    path: tuple[str, ...]

    def child(self, name: str) -> _Where:
        return _Where(self.source, (*self.path, name))

    def fail(self, key: str, problem: str) -> ConfigError:
        section = ".".join(self.path)
        prefix = f"[{section}] " if section else ""
        return ConfigError(f"{self.source}: {prefix}{key}: {problem}")


def _build(cls: type[T], data: Any, where: _Where) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.source}: [{'.'.join(where.path)}]: must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise where.fail(key, f"unknown key (known keys here: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _value(hints[name], data[name], f, where, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise where.fail(name, "missing (this key has no default)")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # __post_init__ cross-field checks
        section = f"[{'.'.join(where.path)}] " if where.path else ""
        raise ConfigError(f"{where.source}: {section}{exc}") from None


def _value(hint: Any, raw: Any, f: dataclasses.Field[Any], where: _Where, name: str) -> Any:
    value = _convert(hint, raw, f, where, name)
    for c in f.metadata.get("checks", ()):
        problem = c(value)
        if problem:
            raise where.fail(name, f"{problem}, got {_show(raw)}")
    return value


def _convert(hint: Any, raw: Any, f: dataclasses.Field[Any], where: _Where, name: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], raw, f, where, name)  # None is spelt by omitting the key
    if origin is Literal:
        if raw not in args:
            choices = " | ".join(repr(a) for a in args)
            raise where.fail(name, f"must be one of {choices}, got {_show(raw)}")
        return raw
    if origin is tuple:
        return _tuple(args[0], raw, f, where, name)
    if dataclasses.is_dataclass(hint):
        if not isinstance(raw, Mapping):
            raise where.fail(name, f"must be a table ([{'.'.join((*where.path, name))}]), got {_show(raw)}")
        return _build(hint, raw, where.child(name))  # type: ignore[arg-type]
    return _scalar(hint, raw, where, name)


def _tuple(item: Any, raw: Any, f: dataclasses.Field[Any], where: _Where, name: str) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise where.fail(name, f"must be a list, got {_show(raw)}")
    tagged = f.metadata.get("variants")
    out = []
    for i, element in enumerate(raw, start=1):
        here = _Where(where.source, (*where.path, f"{name}#{i}"))
        if tagged:
            out.append(_variant(tagged, element, here))
        elif dataclasses.is_dataclass(item):
            out.append(_build(item, element, here))  # type: ignore[arg-type]
        else:
            out.append(_scalar(item, element, where, f"{name}[{i}]"))
    return tuple(out)


def _variant(tagged: tuple[str, dict[str, type]], raw: Any, where: _Where) -> Any:
    tag, table = tagged
    if not isinstance(raw, Mapping) or tag not in raw:
        raise where.fail(tag, "missing (it says which kind this entry is)")
    cls = table.get(raw[tag])
    if cls is None:
        raise where.fail(tag, f"must be one of {' | '.join(map(repr, table))}, got {_show(raw[tag])}")
    return _build(cls, raw, where)


def _scalar(hint: Any, raw: Any, where: _Where, name: str) -> Any:
    if hint is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if hint in (int, float, str, bool) and type(raw) is hint:
        return raw
    if hint is Any:
        return raw
    wanted = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise where.fail(name, f"must be {wanted.get(hint, hint)}, got {_show(raw)}")


def _show(raw: Any) -> str:
    text = repr(raw)
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    return text if len(text) <= 60 else text[:57] + "..."
