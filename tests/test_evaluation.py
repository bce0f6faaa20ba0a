"""Labels of both formats, and ``streamguard eval`` over the independent worlds' format."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamguard.cli import main
from streamguard.evaluation import LabelsError, evaluate, load_labels
from streamguard.schema import AlertRecord

STREAMGUARD_FORMAT = {
    "version": 1,
    "seed": 3,
    "accounts": {
        "acct-a": {"label": "distiller", "kind": "campaign_member", "campaign": "campaign-0", "n_requests": 300},
        "acct-b": {"label": "distiller", "kind": "campaign_member", "campaign": "campaign-0", "n_requests": 200},
        "acct-c": {"label": "benign", "kind": "casual", "campaign": None, "n_requests": 12},
    },
    "campaigns": {"campaign-0": {"members": ["acct-a", "acct-b"], "org_id": None}},
}
INDEPENDENT_FORMAT = {
    "acct-a": {"label": "distiller", "kind": "campaign_member", "campaign": "campaign-0", "events": 300},
    "acct-b": {"label": "distiller", "kind": "campaign_member", "campaign": "campaign-0", "events": 200},
    "acct-c": {"label": "benign", "kind": "casual", "campaign": None, "events": 12},
}


def write(tmp_path, data, name="labels.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_both_formats_read_to_the_same_accounts_and_campaigns(tmp_path):
    ours = load_labels(write(tmp_path, STREAMGUARD_FORMAT, "ours.json"))
    theirs = load_labels(write(tmp_path, INDEPENDENT_FORMAT, "theirs.json"))
    assert ours["format"] == "streamguard" and theirs["format"] == "independent"
    assert theirs["accounts"] == ours["accounts"]
    assert theirs["campaigns"]["campaign-0"]["members"] == ours["campaigns"]["campaign-0"]["members"]
    assert ours["seed"] == 3  # streamguard's own keys are kept


def test_an_independent_account_may_be_called_accounts(tmp_path):
    data = {"accounts": {"label": "benign", "kind": "casual", "campaign": None, "events": 4}}
    labels = load_labels(write(tmp_path, data))
    assert labels["format"] == "independent"
    assert labels["accounts"]["accounts"]["n_requests"] == 4


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "expected an object"),
        ([1, 2], "expected an object"),
        ({"acct-a": {"label": "bot", "kind": "x"}}, "needs label"),
        ({"acct-a": "distiller"}, "needs an object"),
        ({"accounts": {"acct-a": {"label": "nope"}}}, "needs label"),
    ],
)
def test_labels_in_neither_format_are_refused_with_the_reason(tmp_path, data, message):
    with pytest.raises(LabelsError, match=message):
        load_labels(write(tmp_path, data))


def test_evaluate_scores_independent_labels(tmp_path):
    labels = load_labels(write(tmp_path, INDEPENDENT_FORMAT))
    alerts = [AlertRecord("acct-a", 1000, 0.9, "campaign", "c", {}, 7), AlertRecord("acct-c", 1000, 0.9, "near_duplicate", None, {}, 2)]
    result = evaluate(labels, alerts)
    assert (result.true_positives, result.false_positives, result.distillers, result.benign) == (1, 1, 2, 1)
    assert result.by_distiller_kind["campaign_member"]["recall"] == 0.5


def test_eval_command_reads_the_independent_format(tmp_path, capsys):
    labels = write(tmp_path, INDEPENDENT_FORMAT)
    alerts = tmp_path / "a.jsonl"
    alerts.write_text(AlertRecord("acct-b", 2000, 0.8, "campaign", "c", {}, 3).to_json() + "\n")
    traffic = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({
            "request_id": ["r1", "r2", "r3"],
            "ts": pa.array([1000, 2000, 3000], pa.int64()).cast(pa.timestamp("ms")),
            "account_id": ["acct-b", "acct-b", "acct-c"],
            "embedding": pa.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], pa.list_(pa.float32(), 2)),
        }),
        traffic,
    )
    out = tmp_path / "e.json"
    rc = main(["eval", "--labels", str(labels), "--alerts", str(alerts), "--traffic", str(traffic), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert (report["true_positives"], report["false_positives"], report["recall"]) == (1, 0, 0.5)
    assert "campaign_member" in capsys.readouterr().out  # the kind name whole, though stdout is no terminal
