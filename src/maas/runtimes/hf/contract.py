"""What a text model offers callers, whichever runtime serves it.

The transformers runtimes and the ONNX export of the same model (``onnx_text``) must
present one signature, or moving an alias from a model to its optimized version would
change what callers send and get (the registry refuses such a move unless forced). So
the signatures and the refusal of over-long inputs are written here once.
"""

from __future__ import annotations

from maas.errors import ContextLengthExceeded
from maas.protocols.signature import Signature, TensorSpec

__all__ = ["check_token_limit", "classifier_signature", "embedding_signature"]

_TEXT_IN = [TensorSpec(name="text", datatype="BYTES", shape=[-1])]


def embedding_signature(dimensions: int | None) -> Signature:
    """``text`` in; a vector of ``dimensions`` (-1 when unknown) and a token count out."""
    return Signature(
        inputs=list(_TEXT_IN),
        outputs=[
            TensorSpec(name="embedding", datatype="FP32", shape=[-1, dimensions or -1]),
            TensorSpec(name="token_count", datatype="INT64", shape=[-1]),
        ],
    )


def classifier_signature(labels: int) -> Signature:
    """``text`` in; the label and the probabilities of ``labels`` classes out."""
    return Signature(
        inputs=list(_TEXT_IN),
        outputs=[
            TensorSpec(name="label", datatype="BYTES", shape=[-1]),
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, labels]),
        ],
    )


def check_token_limit(longest: int, max_tokens: int) -> None:
    """Refuse a batch whose longest input passes the model's limit, as OpenAI's API
    does, rather than cutting it silently."""
    if longest > max_tokens:
        raise ContextLengthExceeded(
            f"an input has {longest} tokens; this model takes at most {max_tokens}",
            details={"tokens": longest, "max_tokens": max_tokens},
        )
