"""A preallocated KV cache addressed by position, so every sample in a batch can sit at its own offset.

Speculative steps accept a different number of tokens per sample. Rather than cropping and re-packing the cache
after each step, every token's keys and values are written to the slot equal to its position. A query at
position ``p`` attends to slots ``<= p``. Since each step rewrites every slot from the last committed token
onward, a slot that a query can see always holds either committed context or a token of the current window:
stale drafts are overwritten before they could ever be read, and nothing is copied or rolled back.

The class is a ``transformers`` :class:`~transformers.Cache`, so Hugging Face models write into it unchanged;
the project's own models call :meth:`SlotCache.update` the same way.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotLayer(CacheLayerMixin):
    """One layer's keys and values, ``[batch, heads, max_length, head_dim]``, written at per-sample slots."""

    is_sliding = False
    is_compileable = False

    def __init__(self, owner: SlotCache):
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        s = self.owner.max_length
        self.device = key_states.device
        self.keys = key_states.new_zeros(b, h, s, d)
        self.values = value_states.new_zeros(b, h, s, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        pos = self.owner.write_positions
        if pos is None:
            raise RuntimeError("SlotCache.set_positions must be called before a forward pass")
        b, h, t, d = key_states.shape
        start = self.owner.shared_start
        if start is not None:  # every row writes the same contiguous slots: a slice, no index tensors
            self.keys[:, :, start : start + t] = key_states
            self.values[:, :, start : start + t] = value_states
        else:
            idx = pos.to(key_states.device)[:, None, :, None]
            self.keys.scatter_(2, idx.expand(b, h, t, d), key_states.to(self.keys.dtype))
            self.values.scatter_(2, idx.expand(b, h, t, value_states.shape[-1]), value_states.to(self.values.dtype))
        # Attention reads only the live prefix: no query of this forward sees a slot past its highest position.
        live = self.owner.live_length
        return self.keys[:, :, :live], self.values[:, :, :live]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.live_length, 0

    def get_seq_length(self) -> int:
        return self.owner.seq_length

    def get_max_length(self) -> int:
        return self.owner.max_length


class SlotCache(Cache):
    """Position-addressed KV cache of a fixed length for a batch whose samples advance independently.

    Call :meth:`set_positions` with the ``[batch, T]`` positions of the tokens about to be forwarded; every
    layer's ``update`` then scatters the new keys and values to those slots and returns the whole buffer.
    :meth:`attention_mask` gives the matching additive mask (query at position ``p`` sees slots ``<= p``).
    """

    def __init__(self, max_length: int, static: bool = False):
        self.max_length = int(max_length)
        self.static = static
        self.write_positions: torch.Tensor | None = None
        self.seq_length = 0
        self.live_length = 0  # highest position of the current forward + 1: the slots attention reads
        self.shared_start: int | None = None  # the first slot, when every row writes the same contiguous slots
        self._open: torch.Tensor | None = None  # all-zero mask rows: one query seeing every live slot
        super().__init__(layer_class_to_replicate=lambda: SlotLayer(self))

    def set_positions(self, positions: torch.Tensor) -> None:
        if positions.dim() != 2:
            raise ValueError(f"positions must be [batch, T], got shape {tuple(positions.shape)}")
        if self.static:
            # A compiled forward needs the same shapes every step and no host sync: attention reads the whole
            # buffer (the mask hides what no query may see) and writes always scatter.
            self.write_positions = positions
            self.shared_start = None
            self.live_length = self.max_length
            self.seq_length = self.max_length
            return
        top, bottom = int(positions.max()), int(positions.min())
        if top >= self.max_length or bottom < 0:
            raise ValueError(f"positions must lie in [0, {self.max_length}), got max {top}")
        # Rows hold contiguous increasing positions (a prompt or a window), so a span of exactly T slots means
        # every row writes the same ones.
        self.shared_start = bottom if top - bottom == positions.shape[1] - 1 else None
        self.write_positions = positions
        self.live_length = top + 1
        self.seq_length = max(self.seq_length, top + 1)

    def attention_mask(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Additive ``[batch, 1, T, live_length]`` mask over the live prefix (the slots up to this forward's highest
        position, set by :meth:`set_positions`): 0 where slot ``s <= position``, the dtype's min elsewhere."""
        live = self.live_length or self.max_length
        if self.shared_start is not None and positions.shape[1] == 1:
            # One query per row at the live frontier sees every live slot: a view of a zero buffer, built once.
            if self._open is None or self._open.dtype != dtype or self._open.device != positions.device:
                self._open = torch.zeros(1, 1, 1, self.max_length, dtype=dtype, device=positions.device)
            return self._open[..., :live].expand(positions.shape[0], 1, 1, live)
        slots = torch.arange(live, device=positions.device)
        visible = slots[None, None, :] <= positions[:, :, None]
        mask = torch.zeros(visible.shape, dtype=dtype, device=positions.device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[:, None]

    def mark_static(self) -> None:
        """Full-buffer attention from now on, with the key and value buffers at fixed addresses, so that a
        compiled forward (CUDA graphs included) can update them in place: the compiled path of the engine."""
        self.static = True
        for layer in self.layers:
            if layer.is_initialized:
                torch._dynamo.mark_static_address(layer.keys)
                torch._dynamo.mark_static_address(layer.values)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep only the batch rows in ``index`` (used when finished samples leave the batch)."""
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))
                layer.values = layer.values.index_select(0, index.to(layer.values.device))
