"""`vlmcap inspect`: a bundle manifest in a form a person reads in ten seconds."""

from __future__ import annotations

from vlmcap.bundle import BundleManifest


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError("unreachable")


def _quality_lines(m: BundleManifest) -> list[str]:
    """The LLM's quantization and the caption gate's numbers, when the bundle has them."""
    lines = []
    q = m.llm.quantization
    if q is not None:
        group = f" of {q.group_size}" if q.group_size else ""
        lines.append(
            f"quantized  llm {q.scheme} ({q.format}: weights {q.weights}{group};"
            f" activations {q.activations or 'as is'})"
            f", {q.layers} layers, calibrated on {q.calibration_sequences} training captions"
        )
    gate = m.caption_gate
    if gate is not None:
        lines.append(
            f"gate       {', '.join(gate.lossy)} vs float32 on {gate.videos} videos: chrF++ {gate.chrf:.2f}"
            f" (min {gate.thresholds['min_chrf']:g}), exact match {gate.exact_match:.2f}"
            f" (min {gate.thresholds['min_exact_match']:g}), token agreement {gate.token_agreement:.3f}"
            f" (min {gate.thresholds['min_token_agreement']:g})"
        )
    return lines


def _memory_lines(m: BundleManifest) -> list[str]:
    """The export's peak resident memory, when it was recorded (bundles from before it was are not)."""
    peak = m.export.peak_rss_mb
    return [] if peak is None else [f"exported   peak memory {_size(peak * 1e6)} (RSS)"]


def describe_bundle(m: BundleManifest, verified: bool) -> str:
    vision, llm, image = m.vision, m.llm, m.image
    final = vision.verification["final"]
    llm_check = llm.verification
    total = sum(f.size for f in m.files.values())
    fused = ", ".join(f"{op} x{n}" for op, n in vision.fused_ops.items())
    # Bundles from before issue 34 carry ONNX Runtime's fused operators: they load in ONNX Runtime and OpenVINO only.
    operators = f"ONNX Runtime operators: {fused}" if fused else "standard ONNX operators"
    source = m.source_run
    lines = [
        f"bundle     {m.id}  (format {m.format_version}, vlmcap {m.vlmcap_version}, created {m.created})",
        f"source     {source.weights}  step {source.step}  stage {source.stage}",
        f"vision     {m.model.vision}  layer {vision.feature_layer}  {image.size[0]}x{image.size[1]} px",
        f"projector  {m.projector.kind}  {m.projector.tokens_per_frame} tokens/frame"
        f" x {m.video.num_frames} frames = {m.tokens_per_video} tokens/video",
        f"llm        {m.model.llm}  {llm.dtype}  hidden {llm.hidden_size}"
        + (f"  text rows x{llm.embed_scale:g}" if llm.embed_scale != 1.0 else "")
        + f"  LoRA merged: {'yes, into ' + llm.merge_into + ' weights' if llm.adapter_merged else 'no adapter'}",
        f"onnx       {vision.file}  {vision.precision}  opset {vision.opset}  {operators}"
        + ("  (external data)" if vision.external_data else ""),
        f"checked    vision: min cosine {final.min_cosine:.6f}, max |diff| {final.max_abs:.3g}"
        f" on {', '.join(final.providers or [])}",
        f"           llm: greedy agreement {llm_check.top1_agreement:.3f}, max |logit diff| "
        f"{llm_check.max_abs:.3g} over {llm_check.positions} positions",
        *_quality_lines(m),
        f"prompt     {m.prompt.default_prompt}",
        f"generate   max {m.generation.max_new_tokens} new tokens, temperature {m.generation.temperature}, "
        f"stop ids {m.generation.stop_token_ids}",
        *_memory_lines(m),
        f"files      {len(m.files)} files, {_size(total)}: "
        + ("sha256 of every file verified" if verified else "hashes NOT verified"),
    ]
    width = max(len(path) for path in m.files)
    lines += [f"  {path:<{width}}  {_size(entry.size):>9}  {entry.sha256[:16]}" for path, entry in m.files.items()]
    return "\n".join(lines)
