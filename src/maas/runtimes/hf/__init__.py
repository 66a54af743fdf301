"""Hugging Face transformers runtimes: causal LMs (a model directory or a GGUF file),
text classifiers and sentence embedders. Imported only when such a model is served;
they need the ``[llm]`` extra."""
