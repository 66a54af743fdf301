"""llama.cpp runtime: GGUF language models on their quantized weights (``[gguf]`` extra)."""
