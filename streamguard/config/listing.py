"""Each setting's docstring, read from the source of its section, for flag help and ``streamguard settings``."""

from __future__ import annotations

import ast
import functools
import inspect
from dataclasses import fields
from typing import Any, Iterator, Mapping

from streamguard.config.loading import FLAGS, LEGACY_ENV, PROCESS_ENV
from streamguard.config.settings import Settings
from streamguard.config.values import env_name


def flag_help(section: str, name: str, extra: str = "") -> str:
    """Help text of a flag that sets ``settings.<section>.<name>``: the field's doc, its env name, its default."""
    doc = field_docs(type(getattr(Settings(), section))).get(name, "")
    default = getattr(getattr(Settings(), section), name)
    first = doc.splitlines()[0].replace("``", "").rstrip(".") if doc else name.replace("_", " ")
    text = f"{first}{extra} (env {env_name(section, name)}"
    text += f"; default {default!r})" if default not in (None, "") else ")"
    return text.replace("%", "%%")


@functools.lru_cache(maxsize=None)
def field_docs(section_cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), by field name."""
    try:
        tree = ast.parse(inspect.getsource(section_cls).lstrip())
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def settings_reference() -> Iterator[dict[str, Any]]:
    """One row per setting: section, field, env name, flag, legacy env names, default, first line of its docstring."""
    defaults = Settings()
    legacy: dict[tuple[str, str], list[str]] = {}
    for old, key in LEGACY_ENV.items():
        legacy.setdefault(key, []).append(old)
    flags = {key: "--" + dest.replace("_", "-") for dest, key in FLAGS.items()}
    for section in fields(Settings):
        cls = type(getattr(defaults, section.name))
        docs = field_docs(cls)
        for f in fields(cls):
            doc = docs.get(f.name, "")
            yield {
                "setting": f"{section.name}.{f.name}",
                "env": env_name(section.name, f.name),
                "flag": flags.get((section.name, f.name), ""),
                "deprecated_env": legacy.get((section.name, f.name), []),
                "default": getattr(getattr(defaults, section.name), f.name),
                "doc": doc.splitlines()[0] if doc else "",
            }


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``STREAMGUARD_*`` names that are neither a setting, an old name of one, nor a process variable (typos)."""
    known = {row["env"] for row in settings_reference()} | set(LEGACY_ENV) | set(PROCESS_ENV)
    return sorted(k for k in environ if k.startswith("STREAMGUARD_") and k not in known)
