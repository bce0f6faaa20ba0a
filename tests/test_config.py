import math

import pytest

from streamguard.config import Settings, load_settings


def test_defaults_validate():
    settings = load_settings(environ={})
    assert settings == Settings().validate()


def test_environment_and_file_layers(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[scoring]\nmin_requests = 300\n[coverage]\ncells = 512\n")
    settings = load_settings(path, environ={"STREAMGUARD_SCORING_MIN_REQUESTS": "400"})
    assert settings.coverage.cells == 512
    assert settings.scoring.min_requests == 400  # the environment wins over the file


@pytest.mark.parametrize(
    "content, message",
    [
        ("[scoring]\nnot_a_setting = 1\n", "unknown setting"),
        ("[nope]\nx = 1\n", "unknown settings section"),
        ("[signature]\nbits = 100\n", "multiple of 64"),
        ("not toml ===", "not valid TOML"),
    ],
)
def test_bad_settings_explain_themselves(tmp_path, content, message):
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_settings(path, environ={})


def test_hamming_radius_follows_the_simhash_law():
    settings = Settings()
    bits = settings.signature.bits
    p = math.acos(settings.signature.dup_cosine) / math.pi
    assert bits * p < settings.hamming_radius() < bits * p + 3 * math.sqrt(bits * p * (1 - p))


def test_event_time_settings_come_from_the_environment_and_are_checked():
    settings = load_settings(environ={"STREAMGUARD_EVENT_TIME_AHEAD_MS": "3600000", "STREAMGUARD_EVENT_TIME_JUMP_CONFIRMATIONS": "5"})
    assert settings.event_time.ahead_ms == 3_600_000 and settings.event_time.jump_confirmations == 5
    with pytest.raises(ValueError, match="step_ms <= ahead_ms"):
        load_settings(environ={"STREAMGUARD_EVENT_TIME_STEP_MS": str(2 * 86_400_000)})


# --- one source: [service], [metrics], [runtime]; old names; flags; validation; the listing ---

import logging  # noqa: E402
from dataclasses import fields  # noqa: E402

from streamguard.config import LEGACY_ENV, env_name, settings_reference, unknown_env_names  # noqa: E402


def _run_args(argv, environ):
    from streamguard.cli import build_parser
    from streamguard.service.command import resolve_settings

    args = build_parser().parse_args(["run", *argv])
    return args, resolve_settings(args, environ=environ)


def test_an_old_name_gives_the_same_value_and_one_deprecation_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="streamguard.config"):
        old = load_settings(environ={"STREAMGUARD_CHECKPOINT_DIR": "/var/lib/sg", "STREAMGUARD_PARTITIONS": "12"})
    new = load_settings(environ={"STREAMGUARD_SERVICE_STATE_DIR": "/var/lib/sg", "STREAMGUARD_SERVICE_PARTITIONS_HINT": "12"})
    assert old == new and old.service.state_dir == "/var/lib/sg" and old.service.partitions_hint == 12
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert sorted(lines) == [
        "STREAMGUARD_CHECKPOINT_DIR is deprecated: use STREAMGUARD_SERVICE_STATE_DIR",
        "STREAMGUARD_PARTITIONS is deprecated: use STREAMGUARD_SERVICE_PARTITIONS_HINT",
    ]
    assert not any("/var/lib/sg" in line for line in lines), "the value is never logged"


def test_every_old_name_still_reaches_its_setting(caplog):
    samples = {"stop_after_idle": "5", "dim": "64", "partitions_hint": "3", "backend": "numpy", "log_level": "INFO",
               "alert_account_hash": "true"}
    for old, (section, name) in LEGACY_ENV.items():
        raw = samples.get(name, "value")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streamguard.config"):
            settings = load_settings(environ={old: raw})
        assert str(getattr(getattr(settings, section), name)).lower() in (raw.lower(), str(float(raw)) if raw == "5" else raw)
        assert [r.getMessage() for r in caplog.records] == [f"{old} is deprecated: use {env_name(section, name)}"]


def test_the_new_name_wins_over_the_old_one(caplog):
    with caplog.at_level(logging.WARNING, logger="streamguard.config"):
        settings = load_settings(environ={"STREAMGUARD_TOPIC": "old", "STREAMGUARD_SERVICE_TOPIC": "new"})
    assert settings.service.topic == "new"
    assert any("ignored" in r.getMessage() for r in caplog.records)


def test_service_settings_layer_defaults_toml_env_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[service]\ntopic = "from-toml"\ngroup_id = "g-toml"\nstate_dir = "s-toml"\n[metrics]\nport = 9000\n')
    args, settings = _run_args(["--config", str(path), "--group-id", "g-flag"], {"STREAMGUARD_SERVICE_GROUP_ID": "g-env",
                                                                                 "STREAMGUARD_SERVICE_STATE_DIR": "s-env"})
    assert settings.service.topic == args.topic == "from-toml"  # TOML over the default
    assert settings.service.state_dir == args.state_dir == "s-env"  # env over TOML
    assert settings.service.group_id == args.group_id == "g-flag"  # the flag over env
    assert settings.metrics.port == args.metrics_port == 9000
    args, settings = _run_args([], {})
    assert (args.group_id, args.state_dir, args.metrics_addr, args.metrics_port, args.backend) == (
        "streamguard", "streamguard-state", "127.0.0.1", None, "auto")


def test_flag_beats_env_for_kafka_and_runtime_too():
    args, settings = _run_args(["--checkpoint-interval", "3", "--backend", "cpu", "--alert-account-hash"],
                               {"STREAMGUARD_KAFKA_CHECKPOINT_INTERVAL_S": "7", "STREAMGUARD_RUNTIME_BACKEND": "numpy"})
    assert settings.kafka.checkpoint_interval_s == 3.0 and args.backend == settings.runtime.backend == "cpu"
    assert args.alert_account_hash is True
    _, settings = _run_args([], {"STREAMGUARD_KAFKA_CHECKPOINT_INTERVAL_S": "7", "STREAMGUARD_RUNTIME_ALERT_ACCOUNT_HASH": "1"})
    assert settings.kafka.checkpoint_interval_s == 7.0 and settings.runtime.alert_account_hash is True


@pytest.mark.parametrize(
    "environ, setting",
    [
        ({"STREAMGUARD_SERVICE_PARTITIONS_HINT": "-1"}, "service.partitions_hint (STREAMGUARD_SERVICE_PARTITIONS_HINT)"),
        ({"STREAMGUARD_SERVICE_DIM": "zero"}, "service.dim (STREAMGUARD_SERVICE_DIM)"),
        ({"STREAMGUARD_DIM": "0"}, "service.dim"),
        ({"STREAMGUARD_METRICS_PORT": "70000"}, "metrics.port"),
        ({"STREAMGUARD_RUNTIME_BACKEND": "tpu"}, "runtime.backend"),
        ({"STREAMGUARD_SCORING_TICK_MS": "0"}, "scoring.tick_ms (STREAMGUARD_SCORING_TICK_MS)"),
        ({"STREAMGUARD_CAMPAIGN_SHARED_PROMPT_SHARE": "1.5"}, "campaign.shared_prompt_share"),
        ({"STREAMGUARD_STATE_IDLE_EVICT_HOURS": "0"}, "state.idle_evict_hours"),
        ({"STREAMGUARD_KAFKA_MAX_POLL_RECORDS": "x"}, "kafka.max_poll_records"),
    ],
)
def test_a_bad_value_names_the_setting(environ, setting):
    with pytest.raises(ValueError) as info:
        load_settings(environ=environ)
    assert setting in str(info.value)


def test_run_rejects_a_bad_flag_value_with_the_setting_name(capsys):
    from streamguard.cli import main

    assert main(["run", "--bootstrap-servers", "h:1", "--topic", "t", "--partitions-hint", "-2"]) == 2
    assert "service.partitions_hint" in capsys.readouterr().err


def test_every_field_of_every_section_is_in_the_listing_with_its_env_name():
    rows = {row["setting"]: row for row in settings_reference()}
    for section in fields(Settings):
        for f in fields(type(getattr(Settings(), section.name))):
            row = rows[f"{section.name}.{f.name}"]
            assert row["env"] == f"STREAMGUARD_{section.name.upper()}_{f.name.upper()}"
    for old, (section, name) in LEGACY_ENV.items():
        assert old in rows[f"{section}.{name}"]["deprecated_env"]
    assert rows["service.topic"]["flag"] == "--topic" and rows["service.topic"]["doc"]
    assert unknown_env_names({"STREAMGUARD_STAT_DIR": "x", "STREAMGUARD_TOPIC": "t", "STREAMGUARD_HMAC_KEY": "k"}) == ["STREAMGUARD_STAT_DIR"]


def test_streamguard_settings_prints_every_env_name(capsys):
    from streamguard.cli import main

    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    for row in settings_reference():
        assert row["env"] in out
    assert "STREAMGUARD_CHECKPOINT_DIR" in out and "STREAMGUARD_HMAC_KEY" in out
