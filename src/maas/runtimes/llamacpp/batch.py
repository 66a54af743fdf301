"""``LlamaDecodeBatch``: every running sequence of a GGUF model in one llama.cpp context.

The context holds a KV cache for each of ``slots`` sequence ids (llama.cpp's per-sequence
streams, as ``llama-server -np N`` has them; see the runtime for why not the unified
cache). A request takes a slot for its life; each ``step``
is one ``llama_decode`` of a batch that carries every running sequence's last token and,
in the room left (``n_batch``), the next chunk of any prompt still being evaluated, so a
long prompt is spread over several steps instead of stalling the running streams.

Slots keep what they cached when their sequence leaves. A new prompt starts from the
longest prefix some slot already holds: in place if that slot is free, or copied from a
running one (``llama_memory_seq_cp`` of its whole cache, cut back to the prefix), so a
system prompt that many requests repeat is evaluated once.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maas.errors import RuntimeFailure

__all__ = ["LlamaContext", "LlamaDecodeBatch"]


class LlamaContext:
    """A ``llama_context`` and the buffers that talk to it; owned by the runtime."""

    def __init__(self, lib: Any, ctx: Any, *, n_batch: int, slots: int, n_vocab: int) -> None:
        self.lib = lib
        self.ctx = ctx
        self.memory = lib.llama_get_memory(ctx)
        self.n_batch = n_batch
        self.slots = slots
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        #: Tokens each sequence's own cache holds.
        self.n_ctx_seq = int(lib.llama_n_ctx_seq(ctx))
        self.n_vocab = n_vocab
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        #: The batch whose sequences the cache holds now (one at a time).
        self.owner: object | None = None

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.ctx is not None:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None


@dataclass(eq=False)
class _Slot:
    seq: int
    #: Tokens whose keys and values the cache holds for this sequence id, from position 0.
    cached: list[int] = field(default_factory=list)
    #: Prompt tokens not yet evaluated.
    pending: list[int] = field(default_factory=list)
    key: int | None = None
    last_used: int = 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    size = min(len(a), len(b))
    for index in range(size):
        if a[index] != b[index]:
            return index
    return size


class LlamaDecodeBatch:
    """The ``ChunkedBatch`` (and ``DecodeBatch``) of a llama.cpp model."""

    def __init__(self, context: LlamaContext) -> None:
        self._context = context
        self._lib = context.lib
        self._slots = [_Slot(seq) for seq in range(context.slots)]
        self._by_key: dict[int, _Slot] = {}
        self._clock = 0
        self.token_capacity = context.n_ctx
        #: Prompt tokens evaluated, and those taken from cached prefixes instead.
        self.prompt_tokens_evaluated = 0
        self.prompt_tokens_reused = 0
        self._own()

    def _own(self) -> None:
        """Take the context's cache: a batch made later (a warm-up's, a reset's) emptied
        it, so what this one remembers of it is gone."""
        if self._context.owner is self:
            return
        if self._by_key:
            raise RuntimeFailure("the model's cache was taken by another batch")
        self._context.clear()
        for slot in self._slots:
            slot.cached = []
        self._context.owner = self

    def __len__(self) -> int:
        return len(self._by_key)

    # -- joining and leaving -----------------------------------------------------------

    def begin(self, key: int, prompt: Sequence[int]) -> None:
        if not prompt:
            raise ValueError("empty prompt")
        self._own()
        free = [slot for slot in self._slots if slot.key is None]
        if not free:
            raise RuntimeFailure(f"all {len(self._slots)} sequence slots are taken")
        # The longest cached prefix anywhere; one token at least is left to evaluate,
        # as its logits are the sequence's first output.
        limit = len(prompt) - 1
        best, shared = None, 0
        for slot in self._slots:  # the longest, and a free slot rather than a running one
            size = min(_common_prefix(slot.cached, prompt), limit)
            if (size, slot.key is None) > (shared, best is not None and best.key is None):
                best, shared = slot, size
        memory = self._lib
        if best is not None and best.key is None and shared > 0:
            target = best  # a free slot that holds the prefix: continue it in place
            memory.llama_memory_seq_rm(self._context.memory, target.seq, shared, -1)
        else:
            # The free slot whose cache is least worth keeping: the oldest.
            target = min(free, key=lambda slot: (bool(slot.cached), slot.last_used))
            memory.llama_memory_seq_rm(self._context.memory, target.seq, -1, -1)
            if best is not None and shared > 0:
                # Sequences have a cache each: copy the running one's whole, then cut it
                # back to the prefix (llama.cpp copies between caches only whole).
                memory.llama_memory_seq_cp(self._context.memory, best.seq, target.seq, -1, -1)
                memory.llama_memory_seq_rm(self._context.memory, target.seq, shared, -1)
            else:
                shared = 0
        self.prompt_tokens_reused += shared
        target.cached = list(prompt[:shared])
        target.pending = list(prompt[shared:])
        target.key = key
        self._by_key[key] = target

    def leave(self, key: int) -> None:
        """Free the sequence's slot; its cache stays for a later prompt to reuse."""
        slot = self._by_key.pop(key, None)
        if slot is not None:
            slot.key = None
            slot.pending = []
            self._clock += 1
            slot.last_used = self._clock

    # -- stepping ----------------------------------------------------------------------

    def step(self, tokens: Mapping[int, int]) -> dict[int, np.ndarray]:
        """One ``llama_decode``: a token for each of ``tokens``' sequences, then chunks of
        pending prompts in the room left; the logits of every sequence with a next token."""
        self._own()
        batch = self._context.batch
        entries: list[tuple[_Slot, list[int], bool]] = []  # slot, tokens fed, has output
        room = self._context.n_batch
        for key, token in tokens.items():
            entries.append((self._by_key[key], [token], True))
            room -= 1
        for slot in self._slots:
            if room <= 0:
                break
            if slot.key is not None and slot.pending and slot.key not in tokens:
                chunk = slot.pending[:room]
                entries.append((slot, chunk, len(chunk) == len(slot.pending)))
                room -= len(chunk)
        if not entries:
            return {}
        count = 0
        outputs: list[tuple[_Slot, int]] = []
        token_array, pos, n_seq, seq_ids, wants = (
            batch.token,
            batch.pos,
            batch.n_seq_id,
            batch.seq_id,
            batch.logits,
        )
        for slot, fed, output in entries:
            start = len(slot.cached)
            last = len(fed) - 1
            for offset, token in enumerate(fed):
                token_array[count] = token
                pos[count] = start + offset
                n_seq[count] = 1
                seq_ids[count][0] = slot.seq
                wants[count] = output and offset == last
                count += 1
            if output:
                outputs.append((slot, count - 1))
            if slot.pending:
                self.prompt_tokens_evaluated += len(fed)
        batch.n_tokens = count
        self._decode(batch)
        for slot, fed, _ in entries:
            slot.cached.extend(fed)
            if slot.pending:
                del slot.pending[: len(fed)]
        lib, ctx, n_vocab = self._lib, self._context.ctx, self._context.n_vocab
        logits: dict[int, np.ndarray] = {}
        for slot, index in outputs:
            row = lib.llama_get_logits_ith(ctx, index)
            assert slot.key is not None
            logits[slot.key] = np.ctypeslib.as_array(
                ctypes.cast(row, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
            )
        return logits

    def _decode(self, batch: Any) -> None:
        status = self._lib.llama_decode(self._context.ctx, batch)
        if status != 0:  # the scheduler keeps each sequence within its cache: a fault
            raise RuntimeFailure(
                f"llama_decode failed ({status}): a sequence's cache of "
                f"{self._context.n_ctx_seq} tokens is full"
                if status == 1
                else f"llama_decode failed ({status})"
            )

    # -- DecodeBatch, for callers without a scheduler ----------------------------------

    def join(self, key: int, prompt: Sequence[int]) -> np.ndarray:
        return self.join_many({key: prompt})[key]

    def join_many(self, prompts: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
        for key, prompt in prompts.items():
            self.begin(key, prompt)
        done: dict[int, np.ndarray] = {}
        while len(done) < len(prompts):
            for key, row in self.step({}).items():
                done[key] = row.copy()
        return done
