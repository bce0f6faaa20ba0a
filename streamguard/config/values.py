"""Raw values (TOML, environment, flags) made into typed settings, and the environment name of a setting."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Mapping


def _coerce(value: Any, target: Any) -> Any:
    if isinstance(target, bool):
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if isinstance(target, int):
        return int(value)
    if isinstance(target, float):
        return float(value)
    return value


_KINDS: dict[str, Any] = {"bool": False, "int": 0, "float": 0.0, "str": ""}


def _field_kind(section_cls: type, name: str) -> tuple[Any, bool]:
    """(an example value of the field's type, whether it may be None) from its annotation."""
    (f,) = [f for f in fields(section_cls) if f.name == name]
    parts = [p.strip() for p in str(f.type).split("|")]
    base = next((p for p in parts if p != "None"), "str")
    return _KINDS.get(base, ""), "None" in parts


def _coerce_field(section: Any, section_name: str, name: str, value: Any, where: str) -> Any:
    example, optional = _field_kind(type(section), name)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"})):
        return None
    try:
        return _coerce(value, example)
    except (TypeError, ValueError):
        secret = not next(f for f in fields(section) if f.name == name).repr
        shown = "(hidden)" if secret else repr(value)
        raise ValueError(
            f"{section_name}.{name} ({env_name(section_name, name)}) must be {type(example).__name__}, "
            f"got {shown} in {where}"
        ) from None


def _apply(section: Any, values: Mapping[str, Any], where: str, section_name: str = "") -> Any:
    known = {f.name for f in fields(section)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} in {where}; known: {sorted(known)}")
    return replace(section, **{k: _coerce_field(section, section_name, k, v, where) for k, v in values.items()})


def env_name(section: str, name: str) -> str:
    """The environment variable of ``settings.<section>.<name>``: ``STREAMGUARD_<SECTION>_<FIELD>``."""
    return f"STREAMGUARD_{section.upper()}_{name.upper()}"
