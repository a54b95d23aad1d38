"""Export stage (`vlmcap export`): ONNX vision graph, merged LLM, engine bundle (DESIGN.md 3)."""
