"""A bundle's runtimes: vision (ONNX Runtime / torch / OpenVINO), LLM (vLLM / transformers), `Engines`
joining them, `auto`'s measured choice among them, and the checks on what they are given and generate."""
