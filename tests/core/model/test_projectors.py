"""Projectors: shapes, token counts, documented parameter counts, and equality with their references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlmcap.config.schema import ProjectorConfig
from vlmcap.errors import ConfigError
from vlmcap.model.projectors import PROJECTOR_KINDS, ProjectorGeometry, build_projector
from vlmcap.model.projectors.resampler import resize_abs_pos, sincos_2d_pos_embed

REFERENCE = ProjectorGeometry(vision_hidden_size=1024, llm_hidden_size=4096, grid_size=24)

# docs/MODEL.md ("Projectors"), at Dv=1024, Dl=4096 on the 24x24 grid of CLIP-ViT-L/14-336.
DOCUMENTED_TABLE = {
    "linear": (576, 4_198_400),
    "mlp2x_gelu": (576, 20_979_712),
    "c-abstractor": (144, 37_398_016),
    "resampler": (256, 90_218_496),
    "pixel-shuffle": (144, 33_570_816),
}


def _on_meta(kind: str, geometry: ProjectorGeometry = REFERENCE, **options):
    with torch.device("meta"):  # full-size parameter counts without allocating memory
        return build_projector(ProjectorConfig(kind=kind, **options), geometry)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("kind", list(DOCUMENTED_TABLE))
def test_design_table_tokens_and_parameters(kind: str) -> None:
    tokens, params = DOCUMENTED_TABLE[kind]
    projector = _on_meta(kind)
    assert projector.tokens_per_frame == tokens
    assert _count(projector) == params


def test_parameter_breakdowns_of_the_design_table() -> None:
    cabs = _on_meta("c-abstractor")
    assert cabs.pos_emb.numel() == 589_824
    resampler = _on_meta("resampler")
    assert _count(resampler.attn_pool) == 73_433_088
    assert resampler.attn_pool.pos_embed.numel() == 1_048_576
    assert not resampler.attn_pool.pos_embed.requires_grad  # frozen sin-cos table


@pytest.mark.parametrize("kind", list(PROJECTOR_KINDS))
def test_eight_frames_shapes_on_the_reference_grid(kind: str) -> None:
    # Reference grid (24x24) and reference token counts, narrow widths to keep it fast.
    geometry = ProjectorGeometry(vision_hidden_size=32, llm_hidden_size=128, grid_size=24)
    projector = build_projector(
        ProjectorConfig(kind=kind, hidden_size=32 if kind == "c-abstractor" else None), geometry
    )
    features = torch.randn(2, 8, 576, 32)
    out = projector(features)
    per_video = {"linear": 4608, "mlp2x_gelu": 4608, "c-abstractor": 1152, "resampler": 2048, "pixel-shuffle": 1152}
    assert out.shape == (2, per_video[kind], 128)
    assert projector.tokens_per_frame * 8 == per_video[kind]


@pytest.mark.parametrize("kind", list(PROJECTOR_KINDS))
def test_frames_are_projected_independently_and_in_time_order(kind: str) -> None:
    geometry = ProjectorGeometry(vision_hidden_size=16, llm_hidden_size=128, grid_size=8)
    projector = build_projector(
        ProjectorConfig(kind=kind, tokens_per_frame=16 if kind in ("c-abstractor", "resampler") else None), geometry
    ).eval()
    features = torch.randn(1, 3, 64, 16)
    out = projector(features)
    m = projector.tokens_per_frame
    for t in range(3):
        alone = projector(features[:, t : t + 1])
        torch.testing.assert_close(out[:, t * m : (t + 1) * m], alone, rtol=1e-5, atol=1e-5)


def test_projector_does_not_modify_its_input() -> None:
    projector = build_projector(ProjectorConfig(kind="c-abstractor", tokens_per_frame=4), ProjectorGeometry(16, 32, 4))
    features = torch.randn(1, 2, 16, 16)
    copy = features.clone()
    projector(features)
    assert torch.equal(features, copy)


def test_mlp2x_gelu_equals_transformers_llava_projector() -> None:
    from transformers import CLIPVisionConfig, LlavaConfig, Qwen3Config
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=48), text_config=Qwen3Config(hidden_size=64))
    reference = LlavaMultiModalProjector(config)
    ours = build_projector(ProjectorConfig(kind="mlp2x_gelu"), ProjectorGeometry(48, 64, 4))
    # LLaVA-1.5 checkpoints name the layers 0/2; transformers names them linear_1/linear_2.
    mapping = {"0": "linear_1", "2": "linear_2"}
    state = {k: reference.state_dict()[mapping[k.split(".")[0]] + "." + k.split(".")[1]] for k in ours.state_dict()}
    ours.load_state_dict(state, strict=True)
    assert sorted(ours.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    features = torch.randn(2, 3, 16, 48)
    torch.testing.assert_close(ours(features), reference(features.reshape(6, 16, 48)).reshape(2, 48, 64))


def test_pixel_shuffle_equals_transformers_internvl() -> None:
    from transformers import InternVLConfig, InternVLModel, Qwen3Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    config = InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
        text_config=Qwen3Config(
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            vocab_size=32,
            head_dim=32,
        ),
    )
    reference = InternVLModel(config).eval()
    ours = build_projector(ProjectorConfig(kind="pixel-shuffle"), ProjectorGeometry(32, 64, 4))
    ours.load_state_dict(reference.multi_modal_projector.state_dict(), strict=True)
    features = torch.randn(2, 2, 16, 32)
    flat = features.reshape(4, 4, 4, 32)  # what get_image_features reshapes to before shuffling
    shuffled = reference.pixel_shuffle(flat, scale_factor=config.downsample_ratio)
    expected = reference.multi_modal_projector(shuffled.reshape(4, -1, shuffled.shape[-1]))
    assert ours.tokens_per_frame == 4
    torch.testing.assert_close(ours(features), expected.reshape(2, 8, 64))


def test_c_abstractor_keys_follow_honeybee_and_timm() -> None:
    cabs = _on_meta("c-abstractor")
    keys = set(cabs.state_dict())
    block = [
        "conv1.conv.weight",
        "conv1.bn.weight",
        "conv1.bn.bias",
        "conv2.conv.weight",
        "conv2.bn.weight",
        "conv2.bn.bias",
        "se.fc1.weight",
        "se.fc1.bias",
        "se.fc2.weight",
        "se.fc2.bias",
        "conv3.conv.weight",
        "conv3.bn.weight",
        "conv3.bn.bias",
    ]
    expected = {"pos_emb", "readout.0.weight", "readout.0.bias", "readout.2.weight", "readout.2.bias"}
    expected |= {f"net.{s}.b{i}.{k}" for s in (0, 2) for i in (1, 2, 3) for k in block}
    assert keys == expected
    assert cabs.net[0].b1.conv2.conv.groups == 1024  # depthwise 3x3
    assert cabs.net[0].b1.se.fc1.out_channels == 256  # SE 0.25 of the block input
    assert cabs.net[0].b1.conv1.bn.eps == 1e-5


def test_c_abstractor_width_change_adds_timm_downsample_shortcut() -> None:
    cabs = build_projector(ProjectorConfig(kind="c-abstractor", hidden_size=48, depth=2), ProjectorGeometry(32, 64, 8))
    keys = set(cabs.state_dict())
    assert {"net.0.b1.downsample.conv.weight", "net.0.b1.downsample.bn.weight"} <= keys
    assert not any(k.startswith("net.0.b2.downsample") or k.startswith("net.2.b1.downsample") for k in keys)


def test_c_abstractor_loads_checkpoint_with_cls_position_like_honeybee() -> None:
    cabs = build_projector(ProjectorConfig(kind="c-abstractor", tokens_per_frame=4), ProjectorGeometry(16, 32, 4))
    state = cabs.state_dict()
    old = torch.randn(1, 17, 16)  # a checkpoint from before the CLS token was dropped
    state["pos_emb"] = old
    cabs.load_state_dict(state, strict=True)
    assert torch.equal(cabs.pos_emb.data, old[:, 1:])


def test_c_abstractor_init_matches_honeybee_post_init() -> None:
    torch.manual_seed(0)
    cabs = build_projector(ProjectorConfig(kind="c-abstractor"), ProjectorGeometry(256, 512, 12))
    weight = cabs.net[0].b1.conv1.conv.weight
    assert abs(weight.std().item() - 0.02) < 0.002  # normal(0, 0.02), not PyTorch's kaiming default
    assert torch.count_nonzero(cabs.readout[0].bias) == 0
    assert torch.all(cabs.net[0].b1.conv1.bn.weight == 1)
    assert abs(cabs.pos_emb.std().item() - 0.02) < 0.002


def test_sincos_table_matches_the_mae_formula() -> None:
    dim, side = 16, 3
    table = torch.from_numpy(sincos_2d_pos_embed(dim, side))
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    for row in range(side):
        for col in range(side):
            w, h = col * omega, row * omega
            expected = torch.cat([torch.sin(w), torch.cos(w), torch.sin(h), torch.cos(h)]).float()
            torch.testing.assert_close(table[row * side + col], expected)


def test_resampler_position_resize_is_bicubic_and_identity_at_same_size() -> None:
    table = torch.randn(16, 8)
    assert resize_abs_pos(table, 16) is table
    resized = resize_abs_pos(table, 36)
    assert resized.shape == (36, 8)
    grid = table.reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected.permute(0, 2, 3, 1).reshape(36, 8))


def test_resampler_keys_and_heads_follow_qwen_vl() -> None:
    resampler = _on_meta("resampler")
    assert resampler.attn_pool.attn.num_heads == 4096 // 128
    assert resampler.attn_pool.ln_q.eps == resampler.ln_post.eps == 1e-6
    assert set(resampler.state_dict()) == {
        "attn_pool.pos_embed",
        "attn_pool.query",
        "attn_pool.kv_proj.weight",
        "attn_pool.attn.in_proj_weight",
        "attn_pool.attn.in_proj_bias",
        "attn_pool.attn.out_proj.weight",
        "attn_pool.attn.out_proj.bias",
        "attn_pool.ln_q.weight",
        "attn_pool.ln_q.bias",
        "attn_pool.ln_kv.weight",
        "attn_pool.ln_kv.bias",
        "ln_post.weight",
        "ln_post.bias",
        "proj",
    }


def test_resampler_query_attends_with_frozen_positions() -> None:
    projector = build_projector(ProjectorConfig(kind="resampler", tokens_per_frame=4), ProjectorGeometry(8, 128, 4))
    features = torch.randn(1, 1, 16, 8, requires_grad=True)
    projector(features).sum().backward()
    assert projector.attn_pool.pos_embed.grad is None
    assert projector.attn_pool.query.grad is not None and features.grad is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "c-abstractor", "tokens_per_frame": 10}, "square"),
        ({"kind": "linear", "tokens_per_frame": 10}, "does not fit linear"),
    ],
)
def test_bad_projector_options_fail_with_the_field_name(options: dict, message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        build_projector(ProjectorConfig(**options), ProjectorGeometry(16, 32, 4))


def test_pixel_shuffle_rejects_odd_grid() -> None:
    with pytest.raises(ConfigError, match="even patch grid"):
        build_projector(ProjectorConfig(kind="pixel-shuffle"), ProjectorGeometry(16, 32, 5))


def test_every_kind_is_registered_once() -> None:
    assert set(PROJECTOR_KINDS) == set(DOCUMENTED_TABLE)
    assert all(math.isqrt(DOCUMENTED_TABLE[k][0]) ** 2 == DOCUMENTED_TABLE[k][0] for k in DOCUMENTED_TABLE)
