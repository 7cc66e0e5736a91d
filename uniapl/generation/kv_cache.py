"""A KV cache that grows in place instead of by concatenation.

transformers' DynamicCache appends each decode step's keys and values with `torch.cat`, which copies
the whole cache every step: measured on a 2-core CPU (SmolLM2-135M, batch 64, bf16, about 220 cached
tokens), the copies took 59% of a decode step. This cache keeps a buffer with spare room (doubled
when full), writes each step into it, and hands attention a view of the filled part, so a step
copies only the new token's keys and values.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys and values in a buffer [batch, heads, capacity, head_dim], filled up to `length`."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self._key_buffer = self._value_buffer = None

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        capacity = 0 if self._key_buffer is None else self._key_buffer.shape[-2]
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity, 64)
        grown = []
        for old, new in ((self._key_buffer, key_states), (self._value_buffer, value_states)):
            buffer = new.new_empty(*new.shape[:-2], capacity, new.shape[-1])
            if old is not None:
                buffer[..., : self.length, :] = old[..., : self.length, :]
            grown.append(buffer)
        self._key_buffer, self._value_buffer = grown

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        self._reserve(key_states, value_states, end)
        self._key_buffer[..., self.length : end, :] = key_states
        self._value_buffer[..., self.length : end, :] = value_states
        self.length = end
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self.length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self.length = max(self.length + tokens_to_remove, 0)
            self.keys, self.values = self._key_buffer[..., : self.length, :], self._value_buffer[..., : self.length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._key_buffer = self._key_buffer.repeat_interleave(repeats, dim=0)
            self._value_buffer = self._value_buffer.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._key_buffer[..., : self.length, :], self._value_buffer[..., : self.length, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
            self.keys, self.values = self._key_buffer[..., : self.length, :], self._value_buffer[..., : self.length, :]


class GrowingCache(DynamicCache):
    """DynamicCache's interface with GrowingLayer's in-place growth (for models without sliding-window layers)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)


def kv_cache_for(model) -> Cache | None:
    """A GrowingCache where every attention layer is a full one; None (transformers' default) otherwise."""
    text_config = model.config.get_text_config(decoder=True)
    if getattr(text_config, "sliding_window", None) or any(t != "full_attention" for t in getattr(text_config, "layer_types", None) or []):
        return None
    return GrowingCache()
