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
