from __future__ import annotations

import pytest
import yaml

from onerec.config import PRESETS, Config, ConfigError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_round_trips_through_yaml(tmp_path, preset):
    cfg = Config.from_preset(preset)
    path = cfg.save(tmp_path / "c.yaml")
    back = Config.from_file(path)
    assert back == cfg
    assert back.fingerprint() == cfg.fingerprint()
    assert back.preset == preset


def test_presets_differ_in_size():
    tiny, small, base = (Config.from_preset(p) for p in ("tiny", "small", "base"))
    assert tiny.model.d_model < small.model.d_model < base.model.d_model
    assert tiny.tokenizer.codebook_size < small.tokenizer.codebook_size


def test_dotted_overrides_parse_yaml_values():
    cfg = Config.from_preset("tiny", ["model.d_model=64", "tokenizer.balanced=false",
                                      "train.lr=3e-4", "validation.watch_ratio_quantiles=[0.5]"])
    assert cfg.model.d_model == 64
    assert cfg.model.head_dim == 32  # derived field follows
    assert cfg.tokenizer.balanced is False
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.validation.watch_ratio_quantiles == [0.5]


def test_overrides_do_not_leak_into_presets():
    Config.from_preset("tiny", ["model.d_model=64"])
    assert Config.from_preset("tiny").model.d_model == PRESETS["tiny"]["model"]["d_model"]


@pytest.mark.parametrize("override, key", [
    ("model.n_layerz=3", "model.n_layerz"),
    ("modle.d_model=3", "modle"),
    ("train.precision=fp8", "train.precision"),
    ("model.d_model=abc", "model.d_model"),
    ("data.max_seq_len=true", "data.max_seq_len"),
    ("model.d_model=30", "model.d_model"),  # not divisible by n_heads=4 in small
    ("model.top_k_experts=9", "model.top_k_experts"),
    ("serve.beam_width=100000", "serve.beam_width"),
    ("train.lr=-1", "train.lr"),
    ("serve.ort_threads=-1", "serve.ort_threads"),
    ("serve.rm_selection_top_m=-1", "serve.rm_selection_top_m"),
    ("serve.rm_selection_code_cap=-1", "serve.rm_selection_code_cap"),
    ("serve.rm_selection=maybe", "serve.rm_selection"),
    ("validation.watch_ratio_quantiles=[1.5]", "validation.watch_ratio_quantiles"),
    ("align.group_size=1", "align.group_size"),
    ("align.format_k=9", "align.format_k"),
    ("align.temperature=0", "align.temperature"),
    ("align.early_clip=maybe", "align.early_clip"),
    ("align.demoted_authors=[a]", "align.demoted_authors[0]"),
    ("align.fresh_days=-1", "align.fresh_days"),
    ("align.diversity_weight=-0.1", "align.diversity_weight"),
    ("reward.d_model=15", "reward.d_model"),
    ("reward.dropout=1.0", "reward.dropout"),
    ("reward.duration_buckets=0", "reward.duration_buckets"),
    ("reward.n_tasks=3", "reward.n_tasks"),
])
def test_bad_overrides_are_rejected_with_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        Config.from_preset("small", [override])
    assert str(e.value).startswith(key)


def test_unknown_key_in_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    d = Config.from_preset("tiny").to_dict()
    d["train"]["learning_rate"] = 0.1
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"^train\.learning_rate: unknown key"):
        Config.from_file(path)


def test_partial_yaml_starts_from_its_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nmodel:\n  d_model: 48\n  n_heads: 2\n")
    cfg = Config.from_file(path)
    assert cfg.model.d_model == 48
    assert cfg.model.n_experts == PRESETS["tiny"]["model"]["n_experts"]


def test_missing_and_malformed_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.from_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.from_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        Config.from_file(listy)


def test_unknown_preset_is_rejected():
    with pytest.raises(ConfigError, match="preset"):
        Config.from_preset("huge")


def test_fingerprint_changes_with_any_value():
    a = Config.from_preset("tiny")
    b = Config.from_preset("tiny", ["tokenizer.seed=1"])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Config.from_preset("tiny").fingerprint()


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    Config.from_preset("tiny").save(tmp_path / "c.yaml")
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]
