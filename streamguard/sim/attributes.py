"""Request attributes: network prefix, payment instrument and client fingerprint.

``SimConfig(attributes=True)`` (implied by ``traps`` and by the scenarios of
``evasion.ATTRIBUTE_SCENARIOS``) writes the contract's optional
``attributes`` column, ``map<string, string>``, with the keys ``net``,
``pay`` and ``client`` on every request. Values are opaque 12-hex tokens, as
a gateway's keyed hashes would be. They are drawn after everything else,
from a stream of their own, so the rest of the traffic does not change.

Sharing, as a linking detector meets it in real traffic:

- ``net``: most casual users sit behind one of ``N_CARRIERS`` carrier NAT
  prefixes (Zipf sizes: the largest holds hundreds of accounts at scale 1),
  the others on a prefix of their own; some humans switch to a second
  network for part of their requests. Employees of a company org mostly
  come from the office prefix; servers (products, batch jobs, resellers,
  and the ordinary distillers) from a few large cloud ranges.
- ``pay``: one instrument per org for every account billed to it, else one
  per account.
- ``client``: most accounts use one of a handful of common SDK
  fingerprints, the rest one of many rarer ones (each shared by a few
  accounts); some humans use two.

An account's ``Account.attrs`` overrides any of these with a symbolic group
name (an enterprise's internal tool, a hydra's proxy, a campaign's card):
every account naming the same group gets the same value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from streamguard.sim.accounts import DISTILLER_KINDS, EVASION_PREFIX, Account
from streamguard.sim.traps import N_CARRIERS

__all__ = ["ATTRIBUTE_KEYS", "ATTRIBUTES_TYPE", "attribute_column"]

ATTRIBUTE_KEYS: tuple[str, ...] = ("net", "pay", "client")
ATTRIBUTES_TYPE = pa.map_(pa.string(), pa.string())

N_CLOUDS = 16
COMMON_CLIENTS = (0.34, 0.24, 0.16, 0.11, 0.09, 0.06)
"""Popularity of the common SDK fingerprints among the accounts that use one."""

_HUMAN = {"casual", "power_user", "timezone_casual", "enterprise_employee"}
# Share of each kind behind a carrier NAT (humans) or a cloud range (servers)
# when not at the office; the rest have a prefix of their own.
_CARRIER = {"casual": 0.65, "timezone_casual": 0.65, "power_user": 0.4, "enterprise_employee": 0.5}
_CLOUD = {"product": 0.85, "reseller": 0.85, "batch_job": 0.7, "benchmark": 0.5, "joint_benchmark": 0.5, "agent_framework": 0.5}
# Share of a company org's accounts of each kind that send from the office prefix.
_OFFICE = {"casual": 0.5, "power_user": 0.6, "batch_job": 0.7, "benchmark": 0.7, "enterprise_employee": 1.0, "joint_benchmark": 1.0}


def _zipf_pick(rng: np.random.Generator, k: int, exponent: float = 1.0) -> int:
    p = 1.0 / np.arange(1, k + 1) ** exponent
    return int(rng.choice(k, p=p / p.sum()))


def _is_distiller(kind: str) -> bool:
    return kind in DISTILLER_KINDS or kind.startswith(EVASION_PREFIX)


def _plan(rng: np.random.Generator, i: int, a: Account, n_rare: int) -> dict[str, tuple[str, str | None, float]]:
    """Per key: (primary group, secondary group or None, share of requests on the secondary)."""
    kind = a.kind
    human = kind in _HUMAN
    plan: dict[str, tuple[str, str | None, float]] = {}

    own_net = f"own-net:{i}"
    carrier = f"carrier:{_zipf_pick(rng, N_CARRIERS)}"
    if a.org_id is not None and rng.random() < _OFFICE.get(kind, 0.0):
        net = f"office:{a.org_id}"
    elif human:
        net = carrier if rng.random() < _CARRIER.get(kind, 0.5) else own_net
    elif _is_distiller(kind) or kind in _CLOUD:
        net = f"cloud:{_zipf_pick(rng, N_CLOUDS)}" if rng.random() < _CLOUD.get(kind, 0.8) else own_net
    else:
        net = own_net
    net = a.attrs.get("net", net)
    second = None
    share = 0.0
    if human and rng.random() < 0.3:
        # A phone on the carrier, or the home line for someone usually on it.
        second = own_net if net.startswith("carrier:") else carrier
        # At the office most of the day; elsewhere, a phone now and then.
        share = float(rng.uniform(0.05, 0.25) if net.startswith("office:") else rng.uniform(0.1, 0.4))
    plan["net"] = (net, second, share)

    pay = f"org-pay:{a.org_id}" if a.org_id is not None else f"own-pay:{i}"
    plan["pay"] = (a.attrs.get("pay", pay), None, 0.0)

    def client() -> str:
        if rng.random() < 0.85:
            return f"sdk:{int(rng.choice(len(COMMON_CLIENTS), p=np.asarray(COMMON_CLIENTS) / sum(COMMON_CLIENTS)))}"
        return f"rare-client:{_zipf_pick(rng, n_rare, 0.8)}"

    main = a.attrs.get("client") or client()
    second = None
    share = 0.0
    if human and "client" not in a.attrs and rng.random() < 0.3:
        second, share = client(), float(rng.uniform(0.1, 0.5))
    plan["client"] = (main, second, share)
    return plan


def _tokens(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct 12-hex tokens."""
    while True:
        h = rng.bytes(6 * n).hex()
        out = [h[j : j + 12] for j in range(0, len(h), 12)]
        if len(set(out)) == n:
            return out


def attribute_column(rng: np.random.Generator, accounts: list[Account], account_of_row: np.ndarray) -> pa.MapArray:
    """The ``attributes`` column for rows of ``accounts``.

    Parameters
    ----------
    rng : numpy.random.Generator
        The attributes' own stream.
    accounts : list of Account
    account_of_row : (n,) int32
        Index into ``accounts`` of each row, in table order.

    Returns
    -------
    pyarrow.MapArray of length n
        ``{"net", "pay", "client"}`` on every row (``ATTRIBUTES_TYPE``).
    """
    n_rare = max(10, len(accounts) // 15)
    plans = [_plan(rng, i, a, n_rare) for i, a in enumerate(accounts)]
    groups: dict[str, int] = {}

    def code(g: str | None) -> int:
        return -1 if g is None else groups.setdefault(g, len(groups))

    n_acct = len(accounts)
    codes = {}
    for key in ATTRIBUTE_KEYS:
        prim = np.array([code(p[key][0]) for p in plans], np.int64).reshape(n_acct)
        sec = np.array([code(p[key][1]) for p in plans], np.int64).reshape(n_acct)
        share = np.array([p[key][2] for p in plans], np.float64).reshape(n_acct)
        codes[key] = (prim, sec, share)
    values = pa.array(_tokens(rng, len(groups)), pa.string())

    n = account_of_row.shape[0]
    items = np.empty((n, len(ATTRIBUTE_KEYS)), np.int64)
    for j, key in enumerate(ATTRIBUTE_KEYS):
        prim, sec, share = codes[key]
        s = sec[account_of_row]
        use = (s >= 0) & (rng.random(n) < share[account_of_row])
        items[:, j] = np.where(use, s, prim[account_of_row])
    keys = pa.array(list(ATTRIBUTE_KEYS), pa.string()).take(pa.array(np.tile(np.arange(len(ATTRIBUTE_KEYS)), n)))
    offsets = pa.array(np.arange(0, len(ATTRIBUTE_KEYS) * n + 1, len(ATTRIBUTE_KEYS), dtype=np.int32))
    return pa.MapArray.from_arrays(offsets, keys, values.take(pa.array(items.reshape(-1))), type=ATTRIBUTES_TYPE)
