"""Inference engines (`vlmcap batch`): ONNX Runtime / torch vision, vLLM / transformers LLM (DESIGN.md 4)."""
