"""Inference engines (`vlmcap batch`): ONNX Runtime / torch vision, vLLM / transformers LLM (docs/BATCH.md)."""
