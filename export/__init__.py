"""Export stage (`vlmcap export`): ONNX vision graph, merged LLM, engine bundle (docs/EXPORT.md)."""
