"""Hugging Face transformers runtimes: causal LMs (a model directory or a GGUF file),
text classifiers and sentence embedders. Imported only when such a model is served;
they need the ``[llm]`` extra. ``onnx_text`` serves embedders and classifiers exported
to ONNX with the ``[onnx]`` extra alone (onnxruntime and tokenizers, no torch)."""
