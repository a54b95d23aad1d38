"""Config: typed, validated up front, errors name the file and the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from repo_paths import REPO

from vlmcap.config.loading import dump_config, load_config, parse_override
from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ConfigError


def test_defaults_are_the_reference_configuration() -> None:
    config = load_config()
    assert config.model.vision.model == "openai/clip-vit-large-patch14-336"
    assert config.model.llm.model == "Qwen/Qwen3-8B"
    assert config.model.vision.feature_layer == -2
    assert config.video.num_frames == 8
    assert config.prompt.default_prompt == "이 영상을 한국어로 자세히 설명해 주세요."


def test_yaml_file_and_overrides_merge(tmp_path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("model:\n  projector:\n    kind: resampler\n    tokens_per_frame: 64\ntrain:\n  batch_size: 2\n")
    config = load_config(path, ["train.batch_size=8", "model.lora.target_modules=[q_proj, v_proj]"])
    assert config.model.projector.kind == "resampler"
    assert config.model.projector.tokens_per_frame == 64
    assert config.train.batch_size == 8
    assert config.model.lora.target_modules == ["q_proj", "v_proj"]
    assert config.model.llm.model == "Qwen/Qwen3-8B"  # untouched sections keep defaults


def test_unknown_key_names_file_and_dotted_field(tmp_path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("model:\n  projector:\n    knd: mlp2x_gelu\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: invalid config: model\.projector\.knd: unknown key"):
        load_config(path)


def test_a_run_config_from_before_the_standard_graph_still_loads(tmp_path) -> None:
    """Every earlier run's config.yaml holds export.optimize (the offline ONNX Runtime fusion, gone with
    issue 34): it is read and ignored, while any other unknown key is still an error."""
    path = tmp_path / "config.yaml"
    path.write_text("export:\n  optimize: true\n  precision: int8\n")
    config = load_config(path)
    assert config.export.precision == "int8" and "optimize" not in dump_config(config)
    path.write_text("export:\n  optimise: true\n")
    with pytest.raises(ConfigError, match=r"export\.optimise"):
        load_config(path)


def test_segment_and_decode_settings_become_frozen_options_once() -> None:
    batch = load_config(overrides=["batch.segments=fixed:30", "batch.segment_min_s=5", "batch.decoders=[pyav]"]).batch
    plan = batch.segment_plan
    assert (plan.mode, plan.window_s, plan.min_s) == ("fixed", 30.0, 5.0) and batch.segment_plan is plan
    changed = batch.model_copy()
    changed.segments = "scenes"  # an assignment is validated: the plan follows, the original keeps its own
    assert changed.segment_plan.mode == "scenes" and batch.segment_plan is plan
    changed.segments = "none"
    assert changed.segment_plan is None
    with pytest.raises(ValidationError, match="segment_min_s"):
        changed.segment_max_s = 1.0
    options = batch.decode_options(num_frames=12)
    assert (options.num_frames, options.decoders, options.memory_limit_mb) == (12, ("pyav",), 4096)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.projector.kind=transformer", "model.projector.kind"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.llm.quantize=8bit", "model.llm.quantize"),
        ("video.num_frames=many", "video.num_frames"),
        ("model.projector.tokens_per_frame=10", "model.projector"),
        ("export.precision=int4", "export.precision"),
    ],
)
def test_bad_values_name_the_field_and_the_value(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    message = str(err.value)
    assert field in message
    assert "\n" not in message


def test_broken_yaml_reports_the_line(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  vision: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML at line \d"):
        load_config(path)


def test_missing_file_and_non_mapping_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_override_syntax() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("model.projector.kind")


def test_config_presets_and_unknown_preset() -> None:
    tiny = load_config(preset="tiny")
    assert tiny.model.vision.model == "preset:tiny-clip"
    assert tiny.model.llm.quantize == "none"
    random = load_config(preset="reference-random")
    assert random.model.llm.model == "preset:qwen3-8b-random"
    with pytest.raises(ConfigError, match="unknown config preset 'huge'"):
        load_config(preset="huge")


def test_dump_round_trips(tmp_path) -> None:
    config = load_config(preset="tiny", overrides=["model.projector.kind=pixel-shuffle", "seed=7"])
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(path) == config
    assert isinstance(config, VlmcapConfig)


def test_the_documented_nightly_config_is_valid_and_flags_win_over_it() -> None:
    example = REPO / "docs" / "examples" / "nightly.yaml"
    config = load_config(example)
    assert config.batch.inputs == ["/data/videos"] and config.batch.generation.max_new_tokens == 96
    assert config.batch.segment_plan.mode == "fixed" and config.batch.segment_plan.window_s == 30.0
    flagged = load_config(example, flags={"batch.batch_size": 4, "batch.prompt": "설명: 짧게"})
    assert flagged.batch.batch_size == 4 and flagged.batch.workers == 8
    assert flagged.batch.prompt == "설명: 짧게"  # flag values are taken as they are, not parsed as YAML


@pytest.mark.parametrize(
    "override, field",
    [
        ("batch.decoders=[]", "batch.decoders"),
        ("batch.shard=3/3", "batch.shard"),
        ("batch.decoders=[ffmpeg]", "batch.decoders"),
        ("batch.segments=fixed:abc", "batch.segments"),
        ("batch.segment_min_s=0", "batch.segment_min_s"),
        # Non-finite numbers would reach records as NaN/Infinity, which no JSON reader takes.
        ("batch.segments=fixed:" + "9" * 400, "batch.segments"),
        ("batch.segment_max_s=.inf", "batch.segment_max_s"),
        ("batch.generation.temperature=.nan", "batch.generation.temperature"),
        ("train.lr_projector=.inf", "train.lr_projector"),
    ],
)
def test_bad_batch_settings_in_a_config_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(overrides=[override])
