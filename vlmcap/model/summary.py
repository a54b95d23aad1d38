"""A readable summary of the model a config builds: shapes, token counts, parameters."""

from __future__ import annotations

from vlmcap.config.schema import VlmcapConfig


def _count(params) -> int:
    return sum(p.numel() for p in params)


def model_summary(config: VlmcapConfig, device: str = "cpu") -> list[str]:
    from vlmcap.model.vlm import VideoLanguageModel

    model = VideoLanguageModel.from_config(config, device=device)
    t = config.video.num_frames
    prompt = model.prompts.encode()
    v = model.vision
    return [
        f"vision     {config.model.vision.model}: {v.image_size}px, {v.grid_size}x{v.grid_size} patches, "
        f"Dv={v.hidden_size}, layer {v.feature_layer}, {_count(v.parameters()):,} params (frozen)",
        f"projector  {model.projector.kind}: {model.projector.tokens_per_frame} tokens/frame x {t} frames = "
        f"{model.tokens_per_video} tokens/video, {_count(model.projector.parameters()):,} params",
        f"llm        {config.model.llm.model} ({config.model.llm.quantize}): "
        f"Dl={model.llm.get_input_embeddings().embedding_dim}, {_count(model.llm.parameters()):,} params",
        f"prompt     {prompt.num_text_tokens} text tokens + {model.tokens_per_video} vision rows "
        f"= {prompt.num_text_tokens + model.tokens_per_video} prompt rows",
        f"trainable  {_count(p for _, p in model.trainable_parameters()):,} params (stage {config.train.stage})",
    ]
