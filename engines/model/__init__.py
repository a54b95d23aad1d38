"""A bundle's engines: vision (ONNX Runtime / torch), LLM (vLLM / transformers), the `Captioner` joining them,
and the checks on what they are given and what they generate."""
