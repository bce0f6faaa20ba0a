"""How a :class:`~streamguard.stream.pipeline.Pipeline` judges at the end of a tick: touched accounts
one by one, linked groups as campaigns, the allowlist."""

from __future__ import annotations

import hashlib

import numpy as np

from streamguard.detectors.scoring import members_at_work, sweep_line
from streamguard.schema import AlertRecord


class PipelineJudging:
    """Mixed into :class:`~streamguard.stream.pipeline.Pipeline`: reads the state its ``__init__`` and
    ``_build`` set (settings, accounts, scorer, allowlist, stats, the detectors near_duplicate, coverage,
    campaigns and timing, the other partitions' accounts ``foreign``, ``_watermark``, ``_last_request``,
    ``_last_dup_request``) and calls its
    :meth:`~streamguard.stream.pipeline.Pipeline.account_features`."""

    def _score(self, touched: np.ndarray) -> list[AlertRecord]:
        assert self.near_duplicate is not None and self.coverage is not None
        if touched.size == 0:
            return []
        seen = self.near_duplicate.requests_seen(touched)
        candidates = seen >= self.settings.scoring.min_requests
        if not candidates.any():
            return []
        touched, seen = touched[candidates], seen[candidates]
        now_ts = self.accounts.last_ts[touched]
        features = self.account_features(touched)
        alerts = []
        exempt = self._allowlisted(touched) if self.allowlist else None
        for verdict in self.scorer.judge(touched, seen, now_ts, features, self.accounts.first_ts[touched], exempt):
            i = int(np.searchsorted(touched, verdict.slot))
            evidence = dict(verdict.evidence)
            # Where sweep_z counts rarity from (CoverageDetector.centre_on_light): with it, the
            # evidence's rarity_effect and effective topics give its sweep_z back.
            evidence["rarity_offset"] = round(self.coverage.rarity_offset, 4)
            partner = self.near_duplicate.partner(verdict.slot)
            if partner >= 0:
                evidence["linked_account"] = self.accounts.account_id(partner)
            examples = [self._last_dup_request[verdict.slot], self._last_request[verdict.slot]]
            evidence["example_request_ids"] = list(dict.fromkeys(str(e) for e in examples if e))
            alerts.append(
                AlertRecord(
                    account_id=str(self.accounts.account_id(verdict.slot)),
                    ts=int(now_ts[i]),
                    score=round(verdict.score, 4),
                    kind="+".join(verdict.kinds),
                    campaign_id=None,
                    evidence=evidence,
                    events_seen=int(seen[i]),
                )
            )
            for k in verdict.kinds:
                self.stats.alerts_by_kind[k] += 1
        return alerts

    def _allowlisted(self, slots: np.ndarray) -> np.ndarray:
        """(m,) bool: the account, or the org it bills to, is on the allowlist."""
        assert self.campaigns is not None
        ids = (self.accounts.account_id(int(s)) for s in slots.tolist())
        orgs = self.campaigns.orgs_of(slots)
        return np.fromiter(
            (a in self.allowlist or o in self.allowlist for a, o in zip(ids, orgs)), dtype=bool, count=slots.size
        )

    def _colleagues(self, members: np.ndarray) -> bool:
        """Whether most of ``members`` belong to one org (the org named on their requests)."""
        orgs = [o for o in self.campaigns.orgs_of(members).tolist() if o]
        if not orgs:
            return False
        _, counts = np.unique(np.asarray(orgs, dtype=object), return_counts=True)
        return 2 * int(counts.max()) >= members.size

    def _score_campaigns(self) -> list[AlertRecord]:
        """Link accounts into groups and alert the members of groups that cross the line."""
        assert self.near_duplicate and self.coverage and self.campaigns
        seen = self.near_duplicate.requests_seen()
        alerts = []
        now = self._watermark if self._watermark is not None else 0
        active = self.accounts.active_slots()
        excluded = None
        if self.allowlist:
            excluded = np.zeros(self.accounts.capacity, dtype=bool)
            excluded[active] = self._allowlisted(active)
        foreign = None
        if self.foreign is not None:
            # Foreign accounts live as long as local ones: heard from within the idle eviction horizon.
            foreign = self.foreign.view(now - int(self.settings.state.idle_evict_hours * 3_600_000))
        groups = self.campaigns.link(
            self.coverage, seen, active, now, self.near_duplicate.cross_duplicates(), excluded, timing=self.timing,
            foreign=foreign,
        )
        # The next refresh of the mix may leave a group out as a whole (CoverageDetector.refresh_mix):
        # the accounts its links made it of. Small accounts that joined by style alone stay in: the mix
        # is what every account is judged against, and a weaker membership does not move it (measured:
        # leaving them out too alerted a batch job on a simulated stream, seed 4242 at D = 128).
        self.coverage.leave_out_of_mix([campaign.linked() for campaign in groups])
        line = sweep_line(self.settings.campaign.group_false_alerts_per_10k)
        for campaign in groups:
            # Members that sweep on their own are alerted on their own. Where they are a few among
            # many, the group is a campaign only if the others still sweep together; otherwise it
            # is a sweeper and the ordinary accounts its style or prompts happen to link to it (two
            # slow sweepers linked to 54 users). Where most members sweep alone, it is a campaign.
            own = self.coverage.features(campaign.members)
            alone = (own.sweep_z >= self.scorer.sweep_line()) & (
                seen[campaign.members] >= self.settings.scoring.min_requests
            )
            # A group that only shares an attribute value (a cloud range, a card) is never a campaign
            # because its lone sweepers sweep: whatever their number, the others must sweep together.
            by_value = "attribute_share" in campaign.stats
            if alone.any() and (by_value or 2 * int(alone.sum()) < campaign.members.size):
                core = campaign.members[~alone]
                if core.size < self.settings.campaign.min_group:
                    continue
                if by_value:
                    core_z = (
                        self.coverage.group_stats(core, balanced=True)["sweep_z"] - campaign.stats["null_sweep_z"]
                    ) / campaign.stats["null_sweep_sd"]
                else:
                    core_z = self.coverage.group_stats(core)["sweep_z"]
                if core_z < line:
                    continue
            # Colleagues each keep to their own field: an org whose median member is at least as broad
            # as the median established account is not that, and its group is judged as any other.
            # On written prompts every account spreads over dozens of cells, so as many random
            # accounts are broader than a campaign that splits a share of the space among its members
            # (realtext-s6: 16 members of one org, group sweep_z 8, were all left out by the line
            # below), while an enterprise org's employees stay under the median (sim-s21-traps: 2.7-4.7
            # effective topics against 5.6).
            member_breadth = float(np.median(own.effective_topics))
            campaign.stats["members_effective_topics"] = member_breadth
            breadth = self.scorer.median_breadth()
            broad_members = breadth is not None and member_breadth >= breadth
            if (
                campaign.stats["sweep_z"] >= self.settings.scoring.hysteresis * line
                and not broad_members
                and self._colleagues(campaign.members)
            ):
                # Accounts of one org are colleagues, and colleagues ask about their own field together:
                # as a group they are a campaign only if they cover more of the space than as many
                # accounts of the stream drawn at random (a campaign splits the space; an enterprise
                # org of 5-40 employees sharing a system prompt, a card and a network does not).
                pool = active[seen[active] >= self.settings.campaign.link_min_requests]
                seed = int.from_bytes(hashlib.sha256(campaign.campaign_id.encode()).digest()[:8], "little")
                breadth = self.campaigns.null_breadth(self.coverage, pool, campaign.members.size, seed, balanced=by_value)
                campaign.stats["null_effective_topics"] = breadth
                if campaign.stats["effective_topics"] < breadth:
                    continue
            # The group's event time: its latest request, whatever batch it arrived in.
            now_ts = int(self.accounts.last_ts[campaign.members].max())
            volume = float(seen[campaign.members].sum())
            first = int(self.accounts.first_ts[campaign.members].min())
            spans = self.accounts.last_ts[campaign.members] - self.accounts.first_ts[campaign.members]
            alertable = members_at_work(
                spans, self.settings.scoring.min_span_ms,
                own if by_value else None,
                self.settings.campaign.value_member_breadth * (self.scorer.median_breadth() or 0.0),
            )
            verdict = self.scorer.judge_campaign(
                campaign.campaign_id,
                campaign.members,
                campaign.stats,
                volume,
                now_ts,
                first,
                line=line,
                member_span_ms=int(np.median(spans)),
                alertable=alertable,
            )
            if verdict is None:
                continue
            linked = [str(self.accounts.account_id(int(m))) for m in campaign.members[:10]]
            for slot in verdict.members.tolist():
                evidence = dict(verdict.evidence, rarity_offset=round(self.coverage.rarity_offset, 4))
                evidence["linked_accounts"] = [a for a in linked if a != self.accounts.account_id(slot)][:5]
                alerts.append(
                    AlertRecord(
                        account_id=str(self.accounts.account_id(slot)),
                        ts=now_ts,
                        score=round(verdict.score, 4),
                        kind="+".join(verdict.kinds),
                        campaign_id=verdict.campaign_id,
                        evidence=evidence,
                        events_seen=int(seen[slot]),
                    )
                )
            self.stats.alerts_by_kind["campaign"] += int(verdict.members.size)
        return alerts
