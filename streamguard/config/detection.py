"""Settings sections of the detectors: signatures, near-duplicates, coverage, scoring, campaigns."""

from __future__ import annotations

from dataclasses import dataclass

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class SignatureConfig:
    """SimHash signatures used by the near-duplicate detector."""

    bits: int = 128
    """Signature length; a multiple of 64 (stored as uint64 words)."""
    seed: int = 0x5EED
    """Seed of the random hyperplanes: part of the model, keep it fixed."""
    dup_cosine: float = 0.90
    """Cosine (in the stream-centred space) at which two requests are near-duplicates.

    Converted to a Hamming radius with the SimHash collision law
    ``P(bit differs) = angle / pi``; the radius keeps ~all pairs at or above
    this cosine, so the signature is a candidate filter tuned for recall."""


@dataclass(frozen=True)
class NearDuplicateConfig:
    window: int = 65_536
    """The within-account search covers the account's requests among the last `window`
    requests this pipeline has seen. The pipeline keeps 2 * window signatures (16 B each
    at 128 bits, plus 8 B of chain link: 3 MiB at the default) whatever the number of
    accounts; a request's scan costs its account's requests in that window."""
    bands: int = 8
    """Cross-account lookup: the signature is split into this many bands."""
    table_bits: int = 16
    """Each band indexes a table of 2**table_bits buckets."""
    cross_window_ms: int = 24 * HOUR_MS
    """A cross-account match must be at most this old."""
    account_share: float = 0.25
    """No account holds more than this share of the window (``window * account_share``
    entries). A request of an account that already holds its share is compared with
    those entries and is not stored: it takes no place in the window, so one account
    sending most of a partition's traffic can neither push everyone else's requests out
    of the window nor make a request cost more than ``window * account_share``
    comparisons. It is a bound on cost, stated as a share of the partition's own recent
    traffic, not a property of any world: an ordinary account (a product, a batch job)
    is a visible share of a partition's traffic but not a quarter of it for as long as a
    window lasts; one that is keeps being compared with a quarter of the window of its
    own requests, a sample that a template or a repeated prompt still hits."""


@dataclass(frozen=True)
class CoverageConfig:
    cells: int = 1024
    """Fine cells of the codebook (K): spherical k-means centroids of the warm-up."""
    max_topics: int = 1024
    """Fine cells are merged into at most this many topics (see detectors/codebook.py). As many
    as ``cells``: the merge's own cohesion cut decides how many topics the stream's geometry has,
    and this only bounds memory (4 B per topic per account). A lower cap refits the codebook with
    fewer, coarser cells, and a campaign's long shared wrapper then absorbs the topics its members
    ask about (measured, 512 against 1024: written prompts embedded by all-MiniLM-L6-v2 make ~665
    natural topics, recall 0.163 against 0.558 on one such world; a simulated D = 64 stream makes
    555, 9 against 18 of its 19 distillers; README, "Detection on worlds it was not written for")."""
    warmup: int = 20_000
    """Valid requests buffered to fit the codebook when none is loaded, pooled over the topic's
    partitions (see stream/warmup.py): a partition needs no such number of its own."""
    warmup_per_account: int = 8
    """Cap per account in the warm-up sample, so heavy or templated accounts do not own cells."""
    min_accounts_per_cell: int = 2
    """A cell must be used by this many warm-up accounts: one account's system prompt is no capability."""
    wrapper_mad_k: float = 6.0
    """A cell whose requests, once its centroid is removed, still point at other cells (a template
    shared by many accounts wrapped around the topics they ask about) more than the stream's cells
    typically do, by this many robust deviations (the population's own spread, as
    scoring.population_mad_k), is dropped (0: keep every cell); see detectors/codebook.py."""
    kmeans_iters: int = 10
    half_life_hours: float = 72.0
    """Decay of per-account and population topic histograms."""
    population_account_cap: int = 50
    """In the population's mix, an account's k-th request counts min(1, cap / k): the mix
    is what accounts ask about, not what the few heaviest accounts send."""
    mix_trim_mad_k: float = 3.0
    """The mix accounts are judged against is fitted to the accounts whose sweep_z lies within
    this many robust deviations of the kept accounts' median (0: all traffic): distillers in the
    mix flatten it until no sweep looks rare. A robust-statistics cut on a statistic that is
    ~N(0, 1) for ordinary accounts on any world; see CoverageDetector.refresh_mix."""
    centre_on_light_accounts: bool = True
    """Measure rarity from where the stream's light accounts stand, not from the mix itself.

    The accounts too small to be judged yet (under ``scoring.min_requests``) are most of any
    stream's users, and each of them is a few picks of what ordinary people ask. The mix weighs
    accounts by damped volume, so heavy narrow accounts (batch jobs of one to four topics) can
    pull it onto their own topics; against that mix every account that asks what the many ask
    looks rare, a product account of ten thousand end users most of all (`sampled-s11`: its kept
    light accounts' mean rarity effect 0.46, its 18 products' 0.41, all over the line). When the mean
    rarity effect of the light accounts the mix kept is above 0 (at least
    ``scoring.population_min_accounts`` of them), ``sweep_z`` counts rarity from there. Not a
    constant: the offset is read off each stream, and where the mix is sound it ends at 0 (eleven
    independent worlds scored with and without it: the same precision, recall and false alerts
    on every one, though in the first hours of their evasion streams, while small crawlers are
    among the light accounts, it rose as high as 0.96); see CoverageDetector.centre_on_light."""
    drift_baseline_requests: int = 1000
    """An account's topic histogram is frozen once, when it reaches this many requests, and what
    it sends afterwards is judged against it as well as against the population (0: never): a
    reseller or product whose end users mirror the population and which starts a sweep in a
    tenth of its traffic is a change in its own mix long before it is an outlier in the
    population's. One frozen histogram per account this heavy; see CoverageDetector.drift."""
    seed: int = 0


@dataclass(frozen=True)
class ScoringConfig:
    min_requests: int = 100
    """No alert before an account has sent this many requests.

    A floor, not the test: the sweep statistic already weighs how many topics an account picked,
    so this only keeps the very first requests of an account from being judged at all. 100, not
    the former 200, because small streams have sweepers that never reach 200 (the sampled worlds
    s16 and s20: 101-172 requests each, `sweep_z` 5-10, none alerted at 200). Measured over
    `streamguard evaluate --matrix full`: recall up on 6 of 19 worlds, median delay on the
    simulator's worlds ~220 -> ~115 requests, 4 more false alerts over ~17,000 benign accounts
    (casual users on rare topics, in the tail the false-alert setting allows), and `s19e`'s hydra
    67 -> 39 of 112 (more members cross alone first); the six independent worlds scored with
    ../shared/worlds/score.py unchanged."""
    rate_min_requests: int = 200
    """No near-duplicate alert on an account's own rates before it has sent this many requests.

    The near-duplicate rule compares rates (shares of an account's requests) with lines from the
    population, whatever the number of requests behind them; a casual user repeating a popular
    prompt 100 times has a rate of 0.9 as surely as a template sweeper. Measured on an independent
    world never used for tuning (`independent_traffic.py --seed 3141 --scale 0.15 --dim 1024`):
    with one floor of 100 for both rules, one casual user of 123 requests was alerted as
    `near_duplicate`; the former floor of 200 kept it out. A sweep at 100-200 requests still
    alerts, and names `near_duplicate` too when its rates cross."""
    false_alerts_per_10k: float = 5.0
    """The false-alert rate the sweep line is set for: ordinary accounts alerted per 10,000.

    The line is the normal quantile ``z = Phi^-1(1 - rate / 10,000)`` of the sweep statistic
    (``coverage.py``: how much rarer than the population's an account's topics are, in standard
    errors of an account that picks as many topics from the population mix). Under that null
    the statistic is a z-score whatever the world, the embedding model or the codebook, so the
    setting means the same on every stream (5 per 10k: z = 3.29)."""
    min_span_ms: int = 2 * HOUR_MS
    """A sweep must be sustained: the account active for at least this long (a benchmark
    run is one short burst) ..."""
    confirm_ms: int = HOUR_MS // 2
    """... and the line still crossed this long after it was first crossed ..."""
    min_growth: float = 0.1
    """... while the account's volume grew by this fraction (a sweeper keeps going)."""
    burst_growth: float = 0.0
    """Alternatively, volume growing this many times over the first crossing confirms (0: off).
    Off by default: a benchmark run of 2,000 requests crosses at a few hundred and grows
    fourfold inside its own burst, so growth alone cannot tell it from a sweeper."""
    population_min_accounts: int = 30
    """Below this many established accounts, only the absolute floors apply."""
    population_mad_k: float = 6.0
    """A rate is unusual when it is more than k robust deviations above the population median."""
    cross_dup_floor: float = 0.5
    """Floor on the cross-account near-duplicate rate for a near_duplicate alert."""
    hysteresis: float = 0.8
    """Once crossed, an account stays pending until its margin falls below this (not 1.0),
    so evidence hovering at the line is not reset by every wobble."""
    alert_budget: float = 0.0
    """At most this many alerts per 10,000 established accounts per event-time day (0: no cap).
    Over budget, the strongest alerts go out and the rest stay pending, judged again each tick
    and counted as held back; see README, "Calibration"."""
    allowlist: str = ""
    """File of account ids and org ids (one per line, # comments) never alerted nor linked into
    a campaign; their traffic still counts in the population."""
    realert_growth: float = 1.0
    """Alert an account again once its volume has grown by this fraction since the last alert."""
    tick_ms: int = 300_000
    """Accounts are judged each time event time crosses a tick, never at batch ends, so
    alerts do not depend on how the stream was cut into batches."""
    refresh_every_ticks: int = 3
    """Recompute population statistics every this many ticks."""
    evict_every_ticks: int = 12
    """Look for idle accounts to evict every this many ticks."""


@dataclass(frozen=True)
class CampaignConfig:
    style_dims: int = 128
    """Dimensions of the per-account style vector (a random projection of topic residuals)."""
    seed: int = 0x57E1
    style_snr: float = 4.0
    """A style must carry this many times the energy of pure noise to be linked."""
    link_z: float = 6.0
    """Link when the style cosine exceeds link_z / sqrt(style_dims): far beyond chance."""
    min_group: int = 3
    complementarity: float = 2.0
    """A group's effective topics must exceed its median member's this many times."""
    group_false_alerts_per_10k: float = 5.0
    """The sweep line of a linked group, as a false-alert rate (scoring.false_alerts_per_10k's
    meaning; 5 per 10k: z = 3.29, an account's line). Not lower: a group is chosen by its links,
    and ordinary users linked because they ask about the same topics, judged against the rest
    of the stream, sit above the null (up to z = 2.9 on the independent world, seed 7001)."""
    link_min_requests: int = 50
    """Accounts with fewer requests neither make nor bridge a group. Lower catches more of a slow
    campaign's small accounts (20 caught 19-29 of 30 slow_10x members on seeds 10-14, against 8-13
    at 50), but then casual accounts of 20-50 requests, whose few topics look like a style, can be
    pulled into a group (2 on seed 11 with the mixed_into_product scenario): see README, evasion.
    A smaller account still joins a group that exists without it when its style links it to at
    least half of the group's members, or, with a weaker style, to three quarters of them
    (CampaignDetector._attach_unlinked)."""
    max_link_accounts: int = 5000
    link_every_ticks: int = 3
    """Link accounts every this many scoring ticks."""
    shared_prompt_links: float = 3.0
    """Link two accounts once they sent near-duplicates of each other's prompts this many
    times (decayed): one popular prompt sent by both is not a link."""
    shared_prompt_share: float = 0.05
    """... and this share of the smaller account's requests (heavy accounts meet by chance)."""
    edge_half_life_hours: float = 24.0
    """Shared-prompt evidence between two accounts halves after this long."""
    link_orgs: bool = True
    """Accounts billing to the same org_id link on weaker evidence (an org alone is no link:
    companies have many employees): styles at org_link_z, or one shared prompt."""
    org_link_z: float = 3.0
    min_links: int = 2
    """A member must be linked to this many others of its group (one link may be chance)."""
    style_min_topics: float = 2.0
    """A style links only accounts spread over this many effective topics (over about one topic a
    "style" is where that topic sits, not a template)."""
    attribute_max_share: float = 0.25
    """Accounts sharing a request attribute value (a network prefix, a payment instrument) are
    judged together as one group, unless more than this share of the live accounts hold the value:
    then it is infrastructure (a carrier's NAT, a popular SDK) that says nothing about who acts
    together. A share of the population, the same in a stream of 500 accounts or of millions; the
    group must still sweep to be alerted, so the cap only bounds the work. 0 turns it off."""
    attributes_per_account: int = 4
    """Attribute tokens remembered per account (the latest distinct (key, value) pairs), 8 B each."""
    max_attribute_groups: int = 256
    """Attribute groups judged per linking pass, the largest first (bounds the work)."""
    attribute_min_group: int = 6
    """A shared value is judged as a group once this many live accounts hold it. A few accounts
    behind one address are as often a household, a small office or three servers of one cloud
    range as one actor, and a handful of unrelated server accounts (a benchmark run beside two
    sweepers) sweeps together by chance; an actor hiding in many accounts has many."""
    value_member_breadth: float = 0.5
    """A member of a group that only shares an attribute value is alerted with it once it spreads
    over at least this share of the median established account's effective topics (and its topics
    are rarer than the population's): an account of one or two topics behind a campaign's network
    prefix (a batch job, a casual user's few questions) does no share of a sweep (0: any breadth)."""
    timing_false_links: float = 0.01
    """Timing links (detectors/timing.py): accounts whose sessions start and end in the same
    minutes, window after window, beyond what the stream's own rate of session boundaries at those
    times gives by chance. This is the expected number of chance links per linking pass over all
    pairs of linkable accounts together (a Bonferroni line on the Poisson tail), a probability, not
    a fitted constant; 0 turns timing links off."""
    session_gap_minutes: float = 30.0
    """Silence that ends a session: a time scale of people and schedulers (a meeting, a lunch, a
    scheduler's off window), not of a world."""
    timing_bucket_seconds: float = 120.0
    """Width of the buckets session boundaries are matched in (two grids offset by half a bucket:
    boundaries within a minute always meet). A scheduler starts its workers within seconds."""
    timing_baseline_minutes: float = 30.0
    """Either side of a bucket, the stretch of the stream whose boundaries give its chance rate:
    long enough to count, short enough to follow the daily rhythm of a time zone."""
    session_boundaries: int = 16
    """Session starts and ends remembered per account (8 B each)."""
    timing_min_shared: int = 3
    """Boundaries two accounts must share at least, whatever the chance: one or two coincidences in
    a quiet hour are too few to estimate that hour's rate from."""
    max_timing_pairs: int = 2_000_000
    """Candidate pairs compared per linking pass at most (the buckets most above their neighbourhood
    first): bounds the work of a stream of millions of accounts."""
    foreign_accounts: int = 100_000
    """With signatures shared between partitions (``--signatures-topic``): accounts of other
    partitions whose attribute tokens and session boundaries each partition remembers, so that
    attribute groups and timing links reach across partitions (detectors/remote.py; about 200 B
    each: 20 MB). A bound on memory, not a property of a world: beyond it the accounts updated
    longest ago are forgotten first, and a hydra spread over more accounts than this is still
    linked through those it remembers. Records arrive at most one per account of a published
    batch (``batch.max_size``), so messages stay bounded too. 0 turns it off."""
