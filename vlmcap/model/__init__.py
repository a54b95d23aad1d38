"""The video-language model's parts: frozen vision tower, projectors, (LoRA) LLM, the prompt layout and the
one way vision rows and prompt tokens become the LLM's input; generation from those rows."""
