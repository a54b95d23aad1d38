"""Running an ONNX graph: ONNX Runtime sessions and fusions, and OpenVINO compilation with its cache."""
