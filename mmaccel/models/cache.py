"""A preallocated KV cache addressed by position, so every sample in a batch can sit at its own offset.

Speculative steps accept a different number of tokens per sample. Rather than cropping and re-packing the cache
after each step, every token's keys and values are written to the slot equal to its position. A query at
position ``p`` attends to slots ``<= p``. Since each step rewrites every slot from the last committed token
onward, a slot that a query can see always holds either committed context or a token of the current window:
stale drafts are overwritten before they could ever be read, and nothing is copied or rolled back.

A token tree (:mod:`mmaccel.tree`) breaks "slot = position": siblings share a position. Inside
:meth:`SlotCache.tree_attention` the tokens go to consecutive slots after the root and attend along the ancestor
relation; :meth:`SlotCache.keep_path` then moves the accepted path to the slots a chain would have used, after
which "slot = position" holds again for everything committed.

The class is a ``transformers`` :class:`~transformers.Cache`, so Hugging Face models write into it unchanged;
the project's own models call :meth:`SlotCache.update` the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..tree import TreeLayout


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
        elif self.owner.static or not (self.keys.is_contiguous() and self.values.is_contiguous()):
            # a compiled graph (one op of fixed shape), or buffers a flat view cannot address
            idx = pos.to(key_states.device)[:, None, :, None]
            self.keys.scatter_(2, idx.expand(b, h, t, d), key_states.to(self.keys.dtype))
            self.values.scatter_(2, idx.expand(b, h, t, value_states.shape[-1]), value_states.to(self.values.dtype))
        else:
            # Whole head_dim rows copied at flat (row, head, slot) indices: half a scatter's time on the CPU, which
            # indexes every element.
            rows = self.owner.flat_slots(b, h, key_states.device)
            self.keys.view(-1, d).index_copy_(0, rows, key_states.to(self.keys.dtype).reshape(-1, d))
            dv = value_states.shape[-1]
            self.values.view(-1, dv).index_copy_(0, rows, value_states.to(self.values.dtype).reshape(-1, dv))
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
        self._flat: torch.Tensor | None = None
        self._flat_key: tuple | None = None
        self.seq_length = 0
        self.live_length = 0  # highest position of the current forward + 1: the slots attention reads
        self.shared_start: int | None = None  # the first slot, when every row writes the same contiguous slots
        self._open: torch.Tensor | None = None  # all-zero mask rows: one query seeing every live slot
        self.tree: TreeLayout | None = None  # set inside tree_attention: the forward's tokens form a tree
        self._tree_rows: TreeLayout | None = None  # the tree for this forward's rows
        self._tree_root: torch.Tensor | None = None  # [rows, 1] the root's slot in the last tree forward
        super().__init__(layer_class_to_replicate=lambda: SlotLayer(self))

    @contextmanager
    def tree_attention(self, layout: TreeLayout | None) -> Iterator[None]:
        """Forwards inside this block lay their tokens out as ``layout`` says (``None``: a chain, as outside)."""
        self.tree = layout
        try:
            yield
        finally:
            self.tree = None
            self._tree_rows = None

    def set_positions(self, positions: torch.Tensor) -> None:
        if positions.dim() != 2:
            raise ValueError(f"positions must be [batch, T], got shape {tuple(positions.shape)}")
        self._tree_rows = None
        self._flat_key = None  # new positions: flat_slots recomputes
        if self.tree is not None:  # a tree's tokens write at root slot + tree index, not at their positions
            self._tree_rows = tree = self.tree.rows(positions.shape[0])
            self._tree_root = (positions - tree.depth.to(positions.device))[:, :1]  # the root's slot: its position
            positions = positions + (tree.node - tree.depth).to(positions.device)
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

    def flat_slots(self, batch: int, heads: int, device: torch.device) -> torch.Tensor:
        """``[batch * heads * T]`` indices of this forward's slots in a layer buffer viewed as ``[-1, head_dim]``
        (row-major ``[batch, heads, max_length]``), computed once per forward for all layers."""
        key = (batch, heads, device)
        if self._flat_key != key:
            base = torch.arange(batch, device=device)[:, None] * heads + torch.arange(heads, device=device)
            pos = self.write_positions.to(device)
            self._flat = ((base * self.max_length)[:, :, None] + pos[:, None, :]).reshape(-1)
            self._flat_key = key
        return self._flat

    def attention_mask(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Additive ``[batch, 1, T, live_length]`` mask over the live prefix (the slots up to this forward's highest
        position, set by :meth:`set_positions`): 0 where slot ``s <= position``, the dtype's min elsewhere."""
        live = self.live_length or self.max_length
        if self._tree_rows is not None:
            return self._tree_mask(positions, live, dtype)
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

    def _tree_mask(self, positions: torch.Tensor, live: int, dtype: torch.dtype) -> torch.Tensor:
        """A tree token sees the committed prefix (slots before the root) and its own ancestors' slots."""
        tree = self._tree_rows
        root = self._tree_root
        slots = torch.arange(live, device=positions.device)
        index = slots[None, :] - root  # [B, live]: the tree index a slot holds, when in [0, N]
        inside = (index >= 0) & (index < tree.ancestors.shape[-1])
        ancestor = tree.ancestors.to(positions.device).gather(
            2, index.clamp(0, tree.ancestors.shape[-1] - 1)[:, None].expand(-1, positions.shape[1], -1)
        )
        visible = (slots[None, None, :] < root[:, :, None]) | (ancestor & inside[:, None])
        mask = torch.zeros(visible.shape, dtype=dtype, device=positions.device)
        return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]

    def keep_path(self, columns: torch.Tensor) -> None:
        """After a tree forward, keep the tree indices ``columns`` ``[B, D+1]`` (the root, then the accepted path,
        padded with anything): their keys and values move to the consecutive slots from the root's, where a chain
        would have written them. Rows beyond ``B`` (guidance's uncond rows) follow their sample's path."""
        root = self._tree_root
        if root is None:  # no tree forward wrote here (a model that keeps no cache): nothing to move
            return
        columns = columns.to(root.device).repeat(root.shape[0] // columns.shape[0], 1)
        source = root + columns
        target = root + torch.arange(columns.shape[1], device=root.device)
        for layer in self.layers:
            if layer.is_initialized:
                for buffer in (layer.keys, layer.values):
                    h, d = buffer.shape[1], buffer.shape[3]
                    moved = buffer.gather(2, source[:, None, :, None].expand(-1, h, -1, d))
                    buffer.scatter_(2, target[:, None, :, None].expand(-1, h, -1, d), moved)

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
        self._tree_root = None
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))
                layer.values = layer.values.index_select(0, index.to(layer.values.device))
