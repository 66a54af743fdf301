"""Output held to a grammar: llama.cpp's GBNF grammar sampler, one state per sequence.

A JSON schema becomes GBNF with llama-cpp-python's port of llama.cpp's converter; the
grammar sampler then says which tokens may come next. Serving samples as usual and asks
the grammar only about the token it chose (one token: cheap); only when the grammar
refuses it are all the logits masked and the token drawn again, which is llama.cpp's own
order of work. The answer then always parses.
"""

from __future__ import annotations

import ctypes
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


#: An integer of at most 16 digits that is at least 0, and one at least 1.
_NON_NEGATIVE = '("0" | [1-9] [0-9]{0,15}) space'
_POSITIVE = "[1-9] [0-9]{0,15} space"


def _lowest_integer(schema: dict[str, Any]) -> int | None:
    """The least value an integer schema allows, when it sets a lower bound only."""
    if schema.get("type") != "integer" or "maximum" in schema or "exclusiveMaximum" in schema:
        return None
    bounds = []
    if isinstance(schema.get("minimum"), int | float):
        bounds.append(math.ceil(schema["minimum"]))
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        bounds.append(math.floor(schema["exclusiveMinimum"]) + 1)
    return max(bounds) if bounds else None


def _json_schema_to_gbnf(schema: dict[str, Any]) -> str:
    """llama-cpp-python's converter, holding integers to a lower bound of 0 or 1 (counts,
    sizes, populations) too: its port of llama.cpp's converter ignores ``minimum``, so a
    sampled answer could be negative and still fail the schema it was held to. Other
    bounds stay as the port leaves them (parsed, not enforced)."""
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class _Converter(SchemaConverter):
        def visit(self, schema: dict[str, Any], name: str) -> str:
            lowest = _lowest_integer(schema)
            if lowest in (0, 1):  # named as the port names rules
                rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
                rule: str = self._add_rule(  # type: ignore[no-untyped-call]
                    rule_name, _NON_NEGATIVE if lowest == 0 else _POSITIVE
                )
                return rule
            visited: str = super().visit(schema, name)  # type: ignore[no-untyped-call]
            return visited

    converter = _Converter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    resolved = converter.resolve_refs(schema, "stdin")
    converter.visit(resolved, "")
    grammar: str = converter.format_grammar()  # type: ignore[no-untyped-call]
    return grammar


def gbnf_of(output: OutputFormat) -> str:
    """The GBNF grammar of ``output``; ``InvalidRequest`` if the schema cannot be one."""
    schema = dict(output.json_schema) or {"type": "object"}
    try:
        grammar = _json_schema_to_gbnf(schema)
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
