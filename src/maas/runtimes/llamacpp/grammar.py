"""Output held to a grammar: llama.cpp's GBNF grammar sampler, one state per sequence.

A JSON schema becomes GBNF with llama-cpp-python's port of llama.cpp's converter; the
grammar sampler then says which tokens may come next. Serving samples as usual and asks
the grammar only about the token it chose (one token: cheap); only when the grammar
refuses it are all the logits masked and the token drawn again, which is llama.cpp's own
order of work. The answer then always parses.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
from typing import Any, Self

import numpy as np

from maas.errors import InvalidRequest
from maas.runtimes.generation import OutputFormat

__all__ = ["GrammarConstraint", "gbnf_of"]

#: ``llama_token_data``: (id, logit, p) packed as llama.cpp lays it out.
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
#: A string character as JSON has it: llama-cpp-python's converter lets raw control
#: characters (a newline) into strings, which strict JSON parsers refuse (llama.cpp's own
#: converter excludes them, as here).
_JSON_CHAR = (
    r"""char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" """
    r"""[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])"""
)
#: Free text that cannot be mistaken for the start of a JSON object.
_TEXT_RULES = "root ::= json-root | free-text\nfree-text ::= [^{ \\t\\n] [^\\x00]*\n"


def gbnf_of(output: OutputFormat) -> str:
    """The GBNF grammar of ``output``; ``InvalidRequest`` if the schema cannot be one."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = dict(output.json_schema) or {"type": "object"}
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare exceptions for what it lacks
        raise InvalidRequest(
            f"response_format: the JSON schema cannot be enforced: {exc}",
            details={"param": "response_format"},
        ) from None
    grammar = re.sub(r"^char ::= .*$", lambda _: _JSON_CHAR, grammar, count=1, flags=re.M)
    if output.allow_text:
        grammar = re.sub(r"^root ::=", "json-root ::=", grammar, count=1, flags=re.M)
        grammar += "\n" + _TEXT_RULES
    return grammar


class GrammarConstraint:
    """One sequence's grammar state (a ``TokenConstraint``)."""

    def __init__(self, lib: Any, sampler: Any, n_vocab: int) -> None:
        self._lib = lib
        self._sampler = sampler
        self._n_vocab = n_vocab
        self._one = lib.llama_token_data(0, 0.0, 0.0)
        self._one_array = lib.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)

    @classmethod
    def compile(cls, lib: Any, vocab: Any, n_vocab: int, output: OutputFormat) -> Self:
        grammar = gbnf_of(output)
        sampler = lib.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidRequest(
                "response_format: the JSON schema gives a grammar llama.cpp refuses",
                details={"param": "response_format"},
            )
        return cls(lib, sampler, n_vocab)

    def allows(self, token: int) -> bool:
        one = self._one
        one.id, one.logit, one.p = token, 0.0, 0.0
        array = self._one_array
        array.size, array.selected, array.sorted = 1, -1, False
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return not math.isinf(one.logit)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        candidates = np.empty(self._n_vocab, dtype=_TOKEN_DATA)
        candidates["id"] = np.arange(self._n_vocab, dtype=np.int32)
        candidates["logit"] = logits[: self._n_vocab]
        candidates["p"] = 0.0
        lib = self._lib
        array = lib.llama_token_data_array(
            candidates.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)),
            self._n_vocab,
            -1,
            False,
        )
        lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        masked: np.ndarray = candidates["logit"].copy()
        return masked

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, token)

    def __del__(self) -> None:
        sampler, self._sampler = getattr(self, "_sampler", None), None
        if sampler:
            self._lib.llama_sampler_free(sampler)
