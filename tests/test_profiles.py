"""Profiles: lookup order, the typed schema, overrides, and the brief's numbers."""

from __future__ import annotations


import pytest
from omegaconf import OmegaConf

from ohlcv.config import list_profiles, load_profile, to_yaml, write_resolved_profile
from ohlcv.config.loader import packaged_profiles_dir
from ohlcv.errors import ConfigError

PACKAGED = ["daily", "demo", "hourly", "minute"]


def test_every_packaged_profile_loads_and_validates():
    names = [info.name for info in list_profiles() if info.origin == "packaged"]
    assert names == PACKAGED
    for name in names:
        loaded = load_profile(name)
        assert loaded.name == name
        assert loaded.cfg.data.context_length >= 5 * loaded.cfg.data.prediction_length


def test_hourly_carries_the_brief_numbers():
    cfg = load_profile("hourly").cfg
    assert list(cfg.model.patch_sizes) == [16, 32, 64]
    assert cfg.data.freq == "1h"
    assert cfg.data.context_length == 168 and cfg.data.prediction_length == 24
    assert cfg.model.max_seq_len == 512
    assert [d.value for d in cfg.model.distribution] == [
        "student_t",
        "normal_fixed_scale",
        "negative_binomial",
        "log_normal",
    ]
    assert (cfg.pretrain.mask_ratio_min, cfg.pretrain.mask_ratio_max) == (0.1, 0.2)
    assert cfg.pretrain.batch_size == 32
    assert (cfg.pretrain.warmup_steps, cfg.pretrain.max_steps) == (1000, 10000)
    assert cfg.trainer.gradient_clip_val == 1.0
    assert cfg.trainer.precision == "auto"
    assert cfg.trainer.logger == "tensorboard"
    # uni2ts allows only 32-64 for hourly by default: the profile widens it so 16 is used
    assert list(cfg.model.patch_size_constraint) == [16, 64]


def test_brief_alternatives_for_hourly_are_accepted():
    cfg = load_profile("hourly", ["data.context_length=336", "data.prediction_length=48"]).cfg
    assert (cfg.data.context_length, cfg.data.prediction_length) == (336, 48)


def test_unknown_key_names_the_key_the_file_and_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: hourly\ndata:\n  context_lenght: 10\n")
    with pytest.raises(ConfigError) as info:
        load_profile(str(bad))
    message = str(info.value)
    assert str(bad) in message
    assert "data.context_lenght" in message
    assert "did you mean 'data.context_length'" in message
    assert info.value.exit_code == 2


def test_wrong_type_in_a_file_and_in_an_override(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: hourly\nmodel:\n  max_seq_len: lots\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model.max_seq_len: wrong type"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match=r"override: pretrain.batch_size: wrong type"):
        load_profile("hourly", ["pretrain.batch_size=big"])


def test_missing_required_value_is_named(tmp_path):
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\ndata:\n  freq: 1h\n  prediction_length: 24\n")
    with pytest.raises(ConfigError, match=r"data.context_length: required value is missing"):
        load_profile(str(bare))


def test_missing_profile_lists_known_ones():
    with pytest.raises(ConfigError, match=r"profile 'nope' not found \(known profiles: daily, demo, hourly, minute\)"):
        load_profile("nope")


def test_semantic_errors_are_config_errors():
    with pytest.raises(ConfigError, match="trainer.precision: bf16-true fails inside uni2ts"):
        load_profile("hourly", ["trainer.precision=bf16-true"])
    with pytest.raises(ConfigError, match="data.freq"):
        load_profile("hourly", ["data.freq=fortnightly"])
    with pytest.raises(ConfigError, match="model.patch_size_constraint"):
        load_profile("hourly", ["model.patch_size_constraint=[64,16]"])
    with pytest.raises(ConfigError, match="model.size"):
        load_profile("hourly", ["model.d_model=64"])
    with pytest.raises(ConfigError, match="model.d_model"):
        load_profile("hourly", ["model.size=custom"])
    with pytest.raises(ConfigError, match="data.split"):
        load_profile("hourly", ["data.split.train=0.95"])
    with pytest.raises(ConfigError, match="not an override"):
        load_profile("hourly", ["data.context_length"])


def test_lookup_order_path_then_local_then_packaged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_profile("hourly").path == packaged_profiles_dir() / "hourly.yaml"
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "hourly.yaml").write_text(
        "extends: " + str(packaged_profiles_dir() / "hourly.yaml") + "\ndata:\n  context_length: 336\n"
    )
    local = load_profile("hourly")
    assert local.path == tmp_path / "profiles" / "hourly.yaml"
    assert local.cfg.data.context_length == 336
    assert [info.origin for info in list_profiles() if info.name == "hourly"] == ["local"]
    explicit = tmp_path / "mine.yaml"
    explicit.write_text("extends: daily\nname: mine\n")
    assert load_profile(str(explicit)).cfg.data.freq == "1D"


def test_extends_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_profile(str(tmp_path / "a.yaml"))


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  freq: [1h\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line"):
        load_profile(str(broken))


@pytest.mark.parametrize("name", PACKAGED)
def test_resolved_profile_round_trips_on_its_own(tmp_path, name):
    loaded = load_profile(name, ["trainer.seed=7"])
    written = write_resolved_profile(loaded, tmp_path)
    text = written.read_text()
    assert "extends" not in text and "${" not in text
    again = load_profile(str(written))
    assert OmegaConf.to_container(again.cfg) == OmegaConf.to_container(loaded.cfg)
    assert again.cfg.trainer.seed == 7


def test_profiles_show_prints_a_standalone_profile(cli, tmp_path):
    result = cli("profiles", "show", "demo", "pretrain.max_steps=30")
    assert result.exit_code == 0
    body = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("#"))
    standalone = tmp_path / "demo-standalone.yaml"
    standalone.write_text(body)
    cfg = load_profile(str(standalone)).cfg
    assert cfg.pretrain.max_steps == 30
    assert cfg.model.size.value == "custom" and cfg.model.d_model == 64
    assert to_yaml(cfg) == to_yaml(load_profile("demo", ["pretrain.max_steps=30"]).cfg)


def test_profiles_list_shows_every_packaged_profile(cli):
    result = cli("profiles", "list")
    assert result.exit_code == 0
    for name in PACKAGED:
        assert name in result.stdout


def test_an_override_without_its_section_names_the_full_key():
    with pytest.raises(ConfigError, match=r"context_length: unknown key \(did you mean 'data.context_length'\?\)"):
        load_profile("hourly", ["context_length=336"])
    with pytest.raises(ConfigError, match=r"did you mean 'pretrain.lr' or 'finetune.lr'\?"):
        load_profile("hourly", ["lr=0.1"])


@pytest.mark.parametrize("setting, key", [("finetune.lora.alpha=0", "finetune.lora.alpha"),
                                          ("finetune.lora.alpha=-8", "finetune.lora.alpha"),
                                          ("finetune.val_windows=0", "finetune.val_windows")])
def test_fine_tuning_settings_that_cannot_work_are_refused_naming_the_key(setting, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_profile("hourly", [setting])
    load_profile("hourly", ["finetune.lora.alpha=0.5", "finetune.val_windows=1"])  # small but positive: fine
