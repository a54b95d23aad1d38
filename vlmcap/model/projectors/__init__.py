"""Projector kinds behind one builder (docs/MODEL.md): (B,T,N,Dv) -> (B,T*M,Dl), per frame."""

from __future__ import annotations

from vlmcap.config.schema import ProjectorConfig
from vlmcap.errors import ConfigError
from vlmcap.model.projectors.base import FrameProjector, ProjectorGeometry
from vlmcap.model.projectors.c_abstractor import CAbstractorProjector
from vlmcap.model.projectors.linear import LinearProjector
from vlmcap.model.projectors.mlp import MlpGeluProjector
from vlmcap.model.projectors.pixel_shuffle import PixelShuffleProjector
from vlmcap.model.projectors.resampler import ResamplerProjector

PROJECTOR_KINDS: dict[str, type[FrameProjector]] = {
    cls.kind: cls
    for cls in (
        LinearProjector,
        MlpGeluProjector,
        CAbstractorProjector,
        ResamplerProjector,
        PixelShuffleProjector,
    )
}

# Kinds whose token count is fixed by the patch grid; the others take tokens_per_frame.
_FIXED_TOKENS = {"linear", "mlp2x_gelu", "pixel-shuffle"}


def build_projector(config: ProjectorConfig, geometry: ProjectorGeometry) -> FrameProjector:
    """The one place a projector is constructed from config."""
    kind = config.kind
    if kind in _FIXED_TOKENS:
        projector = PROJECTOR_KINDS[kind](geometry)
        if config.tokens_per_frame not in (None, projector.tokens_per_frame):
            raise ConfigError(
                f"model.projector.tokens_per_frame={config.tokens_per_frame} does not fit {kind}, which gives "
                f"{projector.tokens_per_frame} tokens per frame on a {geometry.grid_size}x{geometry.grid_size} grid; "
                "remove the field"
            )
        return projector
    if kind == "c-abstractor":
        return CAbstractorProjector(
            geometry,
            tokens_per_frame=config.tokens_per_frame,
            depth=config.depth,
            mlp_depth=config.mlp_depth,
            hidden_size=config.hidden_size,
        )
    return ResamplerProjector(geometry, tokens_per_frame=config.tokens_per_frame)


__all__ = ["PROJECTOR_KINDS", "FrameProjector", "ProjectorGeometry", "build_projector"]
