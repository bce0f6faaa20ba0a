"""Keyed pseudonyms of account ids: the ``account_hash`` of metrics labels and alert evidence.

An HMAC-SHA256 of the account id under ``STREAMGUARD_HMAC_KEY``: the same
account gets the same pseudonym in the top-N gauge and in alert records (an
operator joins them), and without the key it cannot be reversed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any


def account_hash(key: bytes, account_id: str) -> str:
    """Keyed hash of an account id: HMAC-SHA256, hex, first 16 characters."""
    if not isinstance(account_id, str):
        raise TypeError(f"account_id must be str, got {type(account_id).__name__}")
    return hmac.new(key, account_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def account_hasher(key: bytes) -> Callable[[str], str]:
    """:meth:`StreamguardMetrics.account_hash` for ``key``, without a registry."""
    if not key:
        raise ValueError("hmac key is empty")
    return lambda account_id: account_hash(bytes(key), account_id)


def hmac_key_from_env(environ: Mapping[str, str] | None = None) -> tuple[bytes, bool]:
    """``(key, stable)``: ``STREAMGUARD_HMAC_KEY`` (a Kubernetes Secret), else 32 random bytes.

    With a random key the hashes change at every start: they still join the
    dashboard to the alerts of one process, but are not put into alert records.
    """
    env = os.environ if environ is None else environ
    key = env.get("STREAMGUARD_HMAC_KEY", "").encode()
    if key:
        return key, True
    return os.urandom(32), False


def with_account_hash(alert: Any, account_hash: Callable[[str], str]) -> Any:
    """The alert with ``evidence["account_hash"]``: the label of the account in the top-N gauge.

    The contract's fields are unchanged (the raw ``account_id`` stays, alert
    records are where per-account detail belongs); the hash lets an operator
    join a dashboard row to its alert records.
    """
    return dataclasses.replace(alert, evidence={**alert.evidence, "account_hash": account_hash(alert.account_id)})
