"""``TorchDecodeBatch``: the running sequences of a causal LM in one padded KV cache.

Sequences have different lengths, so the batch cache is left-padded to the longest:
each row's attention mask hides its padding and its position ids count only its own
tokens, which makes a row's logits the same as if it ran alone. A new sequence is
prefilled alone (its prompt in one forward pass) and then merged into the batch
cache; a finished one is dropped by row selection, and columns that have become
padding in every row are trimmed, so the cache never holds more than the longest
live sequence.

Each layer keeps its keys and values in a buffer with room to grow (``_GrowingLayer``),
so a decode step writes one column per layer instead of copying the whole cache, as
``DynamicCache``'s ``torch.cat`` does; the buffer doubles when full.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["TorchDecodeBatch"]


def _left_pad(tensor: torch.Tensor, by: int, dim: int) -> torch.Tensor:
    if by == 0:
        return tensor
    # F.pad takes (left, right) pairs from the last dimension backwards.
    pads = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [by, 0]
    return F.pad(tensor, pads)


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's layers, each with ``keys`` and ``values`` of [batch, heads, length, dim]."""
    return list(cache.layers)


_MIN_SPARE = 64


class _GrowingLayer(DynamicLayer):  # type: ignore[misc]  # mypy skips transformers (Any)
    """A ``DynamicLayer`` whose ``keys``/``values`` are views of a larger buffer."""

    _key_buffer: torch.Tensor
    _value_buffer: torch.Tensor
    _length = 0

    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold ``keys`` and ``values`` (copied) with spare room after them."""
        length = keys.shape[-2]
        capacity = length + max(_MIN_SPARE, length)
        self._key_buffer = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._value_buffer = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._key_buffer[..., :length, :] = keys
        self._value_buffer[..., :length, :] = values
        self.device = keys.device
        self.is_initialized = True
        self._publish(length)

    def _publish(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._length = length
        keys, values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.adopt(key_states, value_states)
            return self._publish(self._length)
        start = self._length
        end = start + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            keys, values = self._publish(start)
            self.adopt(
                torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)
            )
            return self._publish(end)
        self._key_buffer[..., start:end, :] = key_states
        self._value_buffer[..., start:end, :] = value_states
        return self._publish(end)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            keys, values = self._publish(self._length)
            self.adopt(keys[indices], values[indices])

    def trim_front(self, columns: int) -> None:
        if self.is_initialized and columns:
            keys, values = self._publish(self._length)
            self.adopt(keys[..., columns:, :], values[..., columns:, :])


def _new_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` whose full-attention layers grow in place (sliding-window
    layers keep their own class: they drop old columns themselves)."""
    cache = DynamicCache(config=config)
    cache.layers = [
        _GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


class TorchDecodeBatch:
    def __init__(self, model: Any) -> None:
        self._model = model
        self._config = model.config
        # transformers 5.24 renamed ``past_key_values`` to ``cache``; take what it has.
        parameters = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self._keys: list[int] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._positions = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self._keys)

    def join(self, key: int, prompt: Sequence[int]) -> np.ndarray:
        return self.join_many({key: prompt})[key]

    def join_many(self, prompts: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
        """Prefill several prompts in one forward pass (left-padded to the longest),
        then merge their caches into the batch."""
        keys = list(prompts)
        if not keys:
            return {}
        if any(key in self._keys for key in keys) or len(set(keys)) != len(keys):
            raise ValueError("a sequence may join the batch once")
        width = max(len(prompts[key]) for key in keys)
        input_ids = torch.zeros(len(keys), width, dtype=torch.long)
        mask = torch.zeros(len(keys), width, dtype=torch.long)
        for row, key in enumerate(keys):
            prompt = list(prompts[key])
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = _new_cache(self._config)
        with torch.inference_mode():
            out = self._model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_arg: cache},
                use_cache=True,
                logits_to_keep=1,
            )
        logits = out.logits[:, -1].float().numpy()
        self._merge(keys, cache, mask)
        return {key: logits[row] for row, key in enumerate(keys)}

    def _merge(self, keys: list[int], cache: DynamicCache, mask: torch.Tensor) -> None:
        lengths = mask.sum(dim=1)
        if self._cache is None:
            self._cache, self._mask, self._positions = cache, mask, lengths
            self._keys = list(keys)
            return
        width, new_width = self._mask.shape[1], mask.shape[1]
        total = max(width, new_width)
        old_pad, new_pad = total - width, total - new_width
        merged = _new_cache(self._config)
        pairs = zip(_layers(self._cache), _layers(cache), strict=True)
        for layer, (old, new) in zip(_layers(merged), pairs, strict=True):
            layer.update(
                torch.cat([_left_pad(old.keys, old_pad, 2), _left_pad(new.keys, new_pad, 2)]),
                torch.cat([_left_pad(old.values, old_pad, 2), _left_pad(new.values, new_pad, 2)]),
            )
        self._cache = merged
        self._mask = torch.cat([_left_pad(self._mask, old_pad, 1), _left_pad(mask, new_pad, 1)])
        self._positions = torch.cat([self._positions, lengths])
        self._keys.extend(keys)

    def step(self, tokens: Mapping[int, int]) -> dict[int, np.ndarray]:
        if not self._keys:
            return {}
        input_ids = torch.tensor([[tokens[key]] for key in self._keys], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones(len(self._keys), 1, dtype=torch.long)], 1)
        with torch.inference_mode():
            out = self._model(
                input_ids=input_ids,
                attention_mask=self._mask,
                position_ids=self._positions.unsqueeze(1),
                **{self._cache_arg: self._cache},
                use_cache=True,
            )
        self._positions = self._positions + 1
        logits = out.logits[:, -1].float().numpy()
        return {key: logits[row] for row, key in enumerate(self._keys)}

    def leave(self, key: int) -> None:
        if key not in self._keys:
            return
        row = self._keys.index(key)
        del self._keys[row]
        if not self._keys:
            self._cache = None
            self._mask = torch.zeros(0, 0, dtype=torch.long)
            self._positions = torch.zeros(0, dtype=torch.long)
            return
        keep = torch.tensor([i for i in range(len(self._keys) + 1) if i != row])
        assert self._cache is not None
        self._cache.batch_select_indices(keep)
        self._mask = self._mask[keep]
        self._positions = self._positions[keep]
        # Columns that are padding in every remaining row carry nothing: trim them.
        live = self._mask.any(dim=0).nonzero()
        first = int(live[0]) if len(live) else 0
        if first:
            self._mask = self._mask[:, first:]
            for layer in _layers(self._cache):
                if isinstance(layer, _GrowingLayer):
                    layer.trim_front(first)
                else:
                    layer.keys = layer.keys[:, :, first:]
                    layer.values = layer.values[:, :, first:]
