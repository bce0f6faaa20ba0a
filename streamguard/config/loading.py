"""Settings from defaults, a TOML file, the environment (old names included, with a warning) and flags."""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Mapping

from streamguard.config.settings import Settings
from streamguard.config.validation import LOG_LEVELS
from streamguard.config.values import _apply, env_name

log = logging.getLogger("streamguard.config")


LEGACY_ENV: dict[str, tuple[str, str]] = {
    "STREAMGUARD_BOOTSTRAP_SERVERS": ("service", "bootstrap_servers"),
    "STREAMGUARD_TOPIC": ("service", "topic"),
    "STREAMGUARD_GROUP_ID": ("service", "group_id"),
    "STREAMGUARD_ALERTS_TOPIC": ("service", "alerts_topic"),
    "STREAMGUARD_ALERTS_FILE": ("service", "alerts_file"),
    "STREAMGUARD_DEAD_LETTER_TOPIC": ("service", "dead_letter_topic"),
    "STREAMGUARD_SIGNATURES_TOPIC": ("service", "signatures_topic"),
    "STREAMGUARD_CHECKPOINT_DIR": ("service", "state_dir"),
    "STREAMGUARD_PARTITIONS": ("service", "partitions_hint"),
    "STREAMGUARD_STOP_AFTER_IDLE": ("service", "stop_after_idle"),
    "STREAMGUARD_DIM": ("service", "dim"),
    "STREAMGUARD_BACKEND": ("runtime", "backend"),
    "STREAMGUARD_CODEBOOK": ("runtime", "codebook"),
    "STREAMGUARD_LOG_LEVEL": ("runtime", "log_level"),
    "STREAMGUARD_ALERT_ACCOUNT_HASH": ("runtime", "alert_account_hash"),
}
"""Environment names of before the one scheme: still read, with a deprecation warning naming the new one.
(``STREAMGUARD_METRICS_PORT`` and ``STREAMGUARD_METRICS_ADDR`` already are ``[metrics]`` settings.)"""

PROCESS_ENV: dict[str, str] = {
    "STREAMGUARD_CONFIG": "the TOML settings file (--config) itself",
    "STREAMGUARD_HMAC_KEY": "key of the account hashes (a Secret; streamguard/pseudonyms.py)",
    "STREAMGUARD_KERNEL_DIR": "CUDA kernel sources to use instead of the packaged ones",
    "STREAMGUARD_KERNEL_CACHE": "directory of precompiled kernel binaries",
    "STREAMGUARD_CUDA_EMULATE": "run the cuda backend on the CPU stand-in for CuPy (tests)",
    "STREAMGUARD_EMULATE_CACHE": "cache of the emulated kernels",
    "STREAMGUARD_EMBED_CACHE": "simulate --real-text: embedding cache folder",
    "STREAMGUARD_EMBED_THREADS": "simulate --real-text: torch threads",
}
"""``STREAMGUARD_*`` variables that are not settings: they locate files or keys before settings exist."""

FLAGS: dict[str, tuple[str, str]] = {
    **{f: ("service", f) for f in (
        "bootstrap_servers", "topic", "group_id", "alerts_topic", "alerts_file", "dead_letter_topic",
        "signatures_topic", "state_dir", "partitions_hint", "stop_after_idle", "dim",
    )},
    "metrics_port": ("metrics", "port"),
    "metrics_addr": ("metrics", "addr"),
    "backend": ("runtime", "backend"),
    "codebook": ("runtime", "codebook"),
    "log_level": ("runtime", "log_level"),
    "alert_account_hash": ("runtime", "alert_account_hash"),
    **{f: ("kafka", f) for f in (
        "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
    )},
    "checkpoint_interval": ("kafka", "checkpoint_interval_s"),
}
"""argparse ``dest`` -> (section, field) of the flags that override a setting (``--metrics-port`` -> metrics.port)."""


def flag_overrides(args: Any) -> dict[str, dict[str, Any]]:
    """The settings a command's flags give (a flag left out is None and gives nothing): ``load_settings(overrides=)``."""
    out: dict[str, dict[str, Any]] = {}
    for dest, (section, name) in FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.setdefault(section, {})[name] = value
    return out


def settle_flags(args: Any, settings: "Settings") -> None:
    """Write the resolved settings back onto the command's flags (``args.topic`` = ``settings.service.topic``)."""
    for dest, (section, name) in FLAGS.items():
        if hasattr(args, dest):
            setattr(args, dest, getattr(getattr(settings, section), name))


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and overrides.

    Environment variables are ``STREAMGUARD_<SECTION>_<FIELD>``, for example
    ``STREAMGUARD_SCORING_MIN_REQUESTS=200``; the old names of :data:`LEGACY_ENV`
    are still read, with one deprecation warning each, unless the new name is set.
    """
    settings = Settings()
    layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
    if config_file is not None:
        path = Path(config_file)
        try:
            layers.append((str(path), tomllib.loads(path.read_text())))
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    from_env: dict[str, dict[str, str]] = {}
    for old, (section_name, name) in LEGACY_ENV.items():
        if old not in env:
            continue
        new = env_name(section_name, name)
        if new in env:
            log.warning("%s is deprecated and ignored: %s is set too", old, new)
        else:
            log.warning("%s is deprecated: use %s", old, new)
            from_env.setdefault(section_name, {})[name] = env[old]
    for section in fields(Settings):
        prefix = f"STREAMGUARD_{section.name.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                from_env.setdefault(section.name, {})[key[len(prefix):].lower()] = value
    layers.append(("the environment", from_env))
    if overrides:
        layers.append(("overrides", overrides))
    for where, layer in layers:
        for name, values in layer.items():
            if name not in {f.name for f in fields(Settings)}:
                raise ValueError(f"unknown settings section [{name}] in {where}")
            if not isinstance(values, Mapping):
                raise ValueError(f"[{name}] in {where} must be a table of settings")
            settings = replace(settings, **{name: _apply(getattr(settings, name), values, where, name)})
    return settings.validate()


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def initial_log_level(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The logging level before settings are loaded: the flag, else the variable (new name, then old), else WARNING.

    The settings' ``runtime.log_level`` (which a TOML file can set too) is applied once they are loaded."""
    env = os.environ if environ is None else environ
    level = flag or env.get(env_name("runtime", "log_level")) or env.get("STREAMGUARD_LOG_LEVEL") or "WARNING"
    return level.upper() if level.upper() in LOG_LEVELS else "WARNING"
