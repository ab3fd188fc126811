"""The mesh layout's grammar and sort order as a mask on the target model's logits (mesh's own).

Every sequence of the training data (:mod:`mmaccel.mesh.tokenizer`) obeys rules a sampler can break by chance:

* syntax: 9 coordinate tokens a face; ``eos`` only at a face boundary after at least one face; after ``eos`` only
  ``eos``;
* vertex order: a face starts at its lowest vertex (z-y-x), so vertices 1 and 2 are never below vertex 0;
* face order: faces are sorted, and comparing two faces' vertex ranks is comparing their 9 tokens
  lexicographically, so a face's tokens are never lexicographically below the previous face's.

The mask keeps the tokens that continue a sequence inside these rules. The orders are strict (a vertex equal to
vertex 0, vertex 2 equal to vertex 1, or a face equal to the previous one is a degenerate or repeated face the
detokeniser would drop); where a strict rule would leave no token at all (a tie at the top coordinate, 127),
the position falls back to the non-strict order (``>=``), so no position is ever left without a token.

Since the mask is a function of the context alone (the tokens at positions ``<= p`` decide the mask of the
logits at ``p``), it is part of the target distribution: plain AR and every speculative method sample the same
masked model, and the exact rule stays lossless with it.

The logits at position ``p`` choose the token at ``p + 1``: generated-face token ``s = p - 1`` (the prompt is
``[class, bos, prefix faces...]``), slot ``s % 9`` of face ``s // 9``. The tokens before ``p`` sit in the KV
cache, not in the forward's input, so :class:`TokenHistoryCache` keeps them beside it, by position.

A token tree (drafts whose siblings share a position) is masked node by node: each node's history is the
committed tokens plus its own ancestors' (:func:`tree_histories`), and after the step the accepted path's tokens
are written where a chain would have put them (:meth:`TokenHistoryCache.keep_path`).
"""

from __future__ import annotations

import torch

from mmaccel.models import CFGModel, ModelOutput, SlotCache, TokenModel, TokenPrompt

from .tokenizer import TOKENS_PER_FACE

_SLOTS = torch.arange(TOKENS_PER_FACE)


class TokenHistoryCache(SlotCache):
    """A :class:`~mmaccel.models.SlotCache` that also records the token forwarded at each position.

    Like the keys and values, a position's token is rewritten by every forward that covers it, so the tokens at
    positions ``<= p`` a forward reads are committed context or that forward's own window.
    """

    def __init__(self, max_length: int, static: bool = False):
        super().__init__(max_length, static)
        self.tokens: torch.Tensor | None = None  # [batch, max_length], allocated on the first write
        # The last tree forward's tokens and positions, until keep_path writes its accepted path.
        self._tree_tokens: torch.Tensor | None = None
        self._tree_positions: torch.Tensor | None = None

    def record(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Write ``tokens`` at ``positions`` (both ``[B, T]``); return the whole ``[B, max_length]`` history."""
        if self.tokens is None:
            self.tokens = torch.zeros(tokens.shape[0], self.max_length, dtype=torch.long, device=tokens.device)
        self.tokens.scatter_(1, positions, tokens)
        return self.tokens

    def record_tree(self, tokens: torch.Tensor, positions: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
        """A tree forward's ``tokens`` at ``positions`` (``[B, T]``, column 0 the root, the last committed token)
        with ``ancestors`` ``[B, T, T]``: record the root, keep the tree for :meth:`keep_path`, and return each
        node's own history ``[B, T, max_length]``."""
        history = self.record(tokens[:, :1], positions[:, :1])
        self._tree_tokens, self._tree_positions = tokens, positions
        return tree_histories(history, tokens, positions, ancestors)

    def record_forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Record a forward's ``tokens`` at ``positions`` (``[B, T]``) and return what each token may read: the
        ``[B, S]`` history for a chain, or each node's own ``[B, T, S]`` history inside :meth:`tree_attention`."""
        layout = self.tree
        if layout is None:
            return self.record(tokens, positions)
        # Tree siblings share a position, so each node reads its own path.
        layout = layout.rows(tokens.shape[0])
        ancestors = layout.ancestors.gather(2, layout.node[:, None, :].expand(-1, tokens.shape[1], -1))
        return self.record_tree(tokens, positions, ancestors)

    def keep_path(self, columns: torch.Tensor) -> None:
        super().keep_path(columns)
        tree = self._tree_tokens
        if tree is None or self.tokens is None:
            return
        rows = tree.shape[0]
        columns = columns.to(tree.device).repeat(rows // columns.shape[0], 1)
        # The root, then the accepted path (padded with anything: a chain's window writes past its end alike).
        at = self._tree_positions[:, :1] + torch.arange(columns.shape[1], device=tree.device)
        self.tokens.scatter_(1, at.clamp(max=self.max_length - 1), tree.gather(1, columns))
        self._tree_tokens = self._tree_positions = None

    def reorder(self, index: torch.Tensor) -> None:
        super().reorder(index)
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, index.to(self.tokens.device))


def tree_histories(
    history: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor, ancestors: torch.Tensor
) -> torch.Tensor:
    """``[B, T, S]``: for each tree node, ``history`` ``[B, S]`` (committed tokens by position) with the node's
    ancestors' and its own ``tokens`` written at their ``positions``; other nodes' tokens are left out."""
    b, t = tokens.shape
    span = history.shape[1]
    own = history[:, None].expand(b, t, span)
    # Non-ancestors write into a spare last column, so siblings at a shared position never collide.
    where = torch.where(ancestors, positions[:, None, :].clamp(max=span - 1), span)  # [B, T(node), T(writer)]
    out = torch.cat([own, own.new_zeros(b, t, 1)], 2).clone()
    out.scatter_(2, where, tokens[:, None, :].expand(b, t, t))
    return out[..., :span]


def allowed_tokens(history: torch.Tensor, positions: torch.Tensor, levels: int, eos: int, vocab: int) -> torch.Tensor:
    """``[B, T, vocab]``: which tokens may follow position ``positions[b, t]`` given the ``history`` ``[B, S]`` of
    tokens by position (coordinates ``0 .. levels - 1``); positions before the first face token allow all."""
    b, t = positions.shape
    s = positions - 1  # the generated-face index of the token chosen at each position
    slot = s.clamp(min=0) % TOKENS_PER_FACE
    face_start = positions + 1 - slot  # position of the current face's slot 0
    span = history.shape[1]
    slots = _SLOTS.to(positions.device)

    def window(start: torch.Tensor) -> torch.Tensor:  # the 9 tokens from position `start`, [B, T, 9]
        idx = (start[..., None] + slots).clamp(0, span - 1)
        return history.gather(1, idx.view(b, -1)).view(b, t, TOKENS_PER_FACE)

    current, previous = window(face_start), window(face_start - TOKENS_PER_FACE)
    top = levels - 1
    # Face order: while the face so far equals the previous one, the next token is at least the previous face's,
    # and equal to it only while a later slot can still go above the previous face's (no repeated face).
    tied = ((current == previous) | (slots >= slot[..., None])).all(-1) & (s >= TOKENS_PER_FACE)
    face_ref = previous.gather(2, slot[..., None])[..., 0]
    face_tight = ~((previous < top) & (slots > slot[..., None])).any(-1)
    # Vertex order: vertex 1 or 2 (slots 3-8) is above vertex 0, compared coordinate by coordinate (z, y, x).
    coordinate = slot % 3
    mine = current.gather(2, (slot - coordinate)[..., None] + slots[:3])
    base = current[..., :3]
    vertex_tied = ((mine == base) | (slots[:3] >= coordinate[..., None])).all(-1) & (slot >= 3)
    vertex_ref = base.gather(2, coordinate[..., None])[..., 0]
    vertex_tight = ~((base < top) & (slots[:3] > coordinate[..., None])).any(-1)
    # The rules are lower bounds on the next coordinate; strict ones add 1 where equality leaves no way up.
    loose = torch.maximum(torch.where(tied, face_ref, 0), torch.where(vertex_tied, vertex_ref, 0)).clamp(max=top)
    strict = torch.maximum(
        torch.where(tied, face_ref + face_tight.long(), 0),
        torch.where(vertex_tied, vertex_ref + vertex_tight.long(), 0),
    )
    # Vertex 2 differs from vertex 1: its x may not complete a copy of vertex 1.
    copy = (slot == 8) & (current[..., 6] == current[..., 3]) & (current[..., 7] == current[..., 4])
    copied = current[..., 5]
    # Where the strict rules leave nothing (a tie at the top of the range), the loose bound still leaves a token;
    # loose is clamped so that a coordinate remains even after a non-coordinate draft a relaxed rule accepted.
    empty = (strict > top) | ((strict == top) & copy & (copied == top))
    bound = torch.where(empty, loose, strict)
    exclude = torch.where(copy & ~empty, copied, -1)
    token = torch.arange(vocab, device=positions.device)
    allowed = (token >= bound[..., None]) & (token <= top) & (token != exclude[..., None])
    # eos at a face boundary after a face; after an eos among the face tokens (positions 2 .. p), eos only.
    where = torch.arange(span, device=positions.device)
    first_eos = torch.where((history == eos) & (where >= 2), where, span).min(1, keepdim=True).values
    ended = positions >= first_eos
    allowed |= ((slot == 0) & (s >= TOKENS_PER_FACE))[..., None] & (token == eos)
    allowed = torch.where(ended[..., None], token == eos, allowed)
    return allowed | (s < 0)[..., None]  # the class token's logits (choosing bos) stay free


class FaceGrammarModel:
    """A mesh :class:`~mmaccel.models.TokenModel` whose logits are masked to :func:`allowed_tokens` (``-inf``
    elsewhere): the target every method samples when the pipeline's ``structure_mask`` is on.

    It wraps the model itself, inside any guidance wrapper, so the cond and uncond rows are masked alike.
    """

    def __init__(self, model: TokenModel, levels: int, eos: int):
        self.model = model
        self.levels, self.eos = levels, eos
        self.vocab_size = model.vocab_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def embedding_table(self) -> torch.Tensor:
        return self.model.embedding_table()

    def unconditional_prompt(self, prompt: TokenPrompt) -> TokenPrompt:
        return self.model.unconditional_prompt(prompt)

    def new_cache(self, batch_size: int, max_length: int) -> TokenHistoryCache:
        return TokenHistoryCache(max_length)

    def _mask(self, out: ModelOutput, history: torch.Tensor, positions: torch.Tensor) -> ModelOutput:
        allowed = allowed_tokens(history, positions, self.levels, self.eos, out.logits.shape[-1])
        return ModelOutput(out.logits.masked_fill(~allowed, float("-inf")), out.hidden)

    def prefill(self, prompt: TokenPrompt, cache: TokenHistoryCache, output_hidden: bool = False) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        history = cache.record(ids, torch.arange(ids.shape[1], device=self.device).expand_as(ids))
        out = self.model.prefill(prompt, cache, output_hidden)
        return self._mask(out, history, (prompt.lengths.to(self.device) - 1)[:, None])

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: TokenHistoryCache, output_hidden: bool = False
    ) -> ModelOutput:
        histories = cache.record_forward(tokens, positions)
        if histories.dim() == 2:
            return self._mask(self.model.forward(tokens, positions, cache, output_hidden), histories, positions)
        # A tree: each node is masked by its own path's history ([B, T, S]).
        out = self.model.forward(tokens, positions, cache, output_hidden)
        b, t = tokens.shape
        allowed = allowed_tokens(
            histories.flatten(0, 1), positions.reshape(b * t, 1), self.levels, self.eos, out.logits.shape[-1]
        ).view(b, t, -1)
        return ModelOutput(out.logits.masked_fill(~allowed, float("-inf")), out.hidden)


def mesh_target(model: TokenModel, structure_mask: bool, guidance_scale: float = 1.0) -> TokenModel:
    """The model a mesh decoder samples: ``model`` (a mesh GPT, with its ``vocab``) masked to the grammar when
    ``structure_mask``, inside classifier-free guidance when ``guidance_scale != 1``."""
    target = FaceGrammarModel(model, model.vocab.levels, model.vocab.eos) if structure_mask else model
    return CFGModel(target, guidance_scale) if guidance_scale != 1.0 else target
