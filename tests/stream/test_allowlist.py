"""An allowlisted account or org is never alerted nor linked; the rest of the stream is judged as before."""

from dataclasses import replace

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.config import load_settings
from streamguard.schema import infer_dim, validate_table
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.replay import event_time_order


def alerted(settings, batch):
    pipeline = Pipeline(settings, NumpyBackend())
    alerts = pipeline.process(batch) + pipeline.finish()
    return alerts, pipeline


def test_allowlisted_accounts_and_orgs_are_never_alerted(small_settings, small_traffic, tmp_path):
    table = event_time_order(small_traffic.table)
    batch, _ = validate_table(table, infer_dim(table))
    alerts, _ = alerted(small_settings, batch)
    flagged = sorted({a.account_id for a in alerts})
    assert len(flagged) >= 2, "the small traffic must raise alerts on two accounts, or this test proves nothing"
    org_of = dict(zip(batch.account_ids.tolist(), batch.org_ids.tolist()))
    by_org = next((a for a in flagged if org_of.get(a)), None)
    by_account = next(a for a in flagged if a != by_org)
    listed = [f"{by_account}  # a known research partner", ""]
    if by_org is not None:
        listed.append(org_of[by_org])
    path = tmp_path / "allowlist.txt"
    path.write_text("\n".join(listed) + "\n")
    settings = replace(small_settings, scoring=replace(small_settings.scoring, allowlist=str(path)))
    again, pipeline = alerted(settings, batch)
    exempt = {by_account} | ({a for a, o in org_of.items() if o == org_of[by_org]} if by_org else set())
    assert not exempt & {a.account_id for a in again}
    assert {a.account_id for a in again} - exempt, "the other accounts are still alerted"
    # Their traffic still counts: the population judged is the same.
    assert pipeline.stats.requests == len(batch)


def test_a_missing_allowlist_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="allowlist"):
        load_settings(environ={"STREAMGUARD_SCORING_ALLOWLIST": str(tmp_path / "nope.txt")})


def test_the_alert_budget_caps_alerts_per_event_day_and_counts_the_rest(small_settings, small_traffic):
    from streamguard.metrics import StreamguardMetrics
    from prometheus_client import CollectorRegistry

    table = event_time_order(small_traffic.table)
    batch, _ = validate_table(table, infer_dim(table))
    free, _ = alerted(small_settings, batch)
    budget = 1e-3  # far below one alert a day for this population: the floor of one a day applies
    settings = replace(small_settings, scoring=replace(small_settings.scoring, alert_budget=budget))
    capped, pipeline = alerted(settings, batch)
    assert len({a.account_id for a in free}) > 3, "the small traffic must raise several alerts, or this test proves nothing"
    days = sorted(a.ts for a in capped)
    # Never more than one alert in any 24 h of event time. The budget is spent at a scoring tick; an
    # alert is stamped with its account's latest request, up to one tick earlier.
    tick = settings.scoring.tick_ms
    assert all(later - earlier >= 86_400_000 - tick for earlier, later in zip(days, days[1:]))
    assert pipeline.scorer.held_back > 0 and len(capped) < len(free)
    registry = CollectorRegistry()
    metrics = StreamguardMetrics(registry, b"k")
    metrics.held_back(pipeline.scorer.held_back)
    assert registry.get_sample_value("streamguard_alerts_held_back_total") == pipeline.scorer.held_back
