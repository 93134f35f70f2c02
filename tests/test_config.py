import pytest

from infra.config import ConfigError, config_hash, load_config, parse_override


def test_profiles_load_and_validate():
    for profile in ("tiny", "wan-1.3b", "wan-14b"):
        cfg = load_config(profile)
        assert cfg.profile == profile
    assert load_config("wan-14b").storage.run_root.startswith("s3://")


def test_override_parses_yaml_values():
    assert parse_override("stages.clips.min_seconds=2.5") == {"stages": {"clips": {"min_seconds": 2.5}}}
    cfg = load_config("tiny", ["stages.segment.use_transnet=false", "corpus.videos=3"])
    assert cfg.stages.segment.use_transnet is False and cfg.corpus.videos == 3


@pytest.mark.parametrize(
    "override, expected",
    [
        ("stages.segment.merge=sometimes", ["stages.segment.merge", "'union'", "'vote'"]),
        ("stages.segmnt.merge=union", ["stages.segmnt", "unknown field", "allowed keys", "segment"]),
        ("corpus.videos=0", ["corpus.videos", "greater than or equal to 1"]),
        ("stages.clips.min_seconds=30", ["stages.clips", "min_seconds (30.0) must be smaller"]),
        ("corpus.width=abc", ["corpus.width", "'abc'", "integer"]),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    for fragment in expected:
        assert fragment in str(info.value)


def test_unknown_profile_and_malformed_override():
    with pytest.raises(ConfigError, match="allowed: tiny, wan-1.3b, wan-14b"):
        load_config("huge")
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config("tiny", ["stages.clips.min_seconds"])


def test_config_hash_changes_with_values_only():
    a, b = load_config("tiny"), load_config("tiny")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config("tiny", ["corpus.seed=1"]))


def test_yaml_booleans_do_not_swallow_words():
    assert load_config("tiny", ["audit.mode=off"]).audit.mode == "off"
    assert load_config("tiny", ["stages.segment.use_transnet=false"]).stages.segment.use_transnet is False
