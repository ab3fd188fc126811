"""Window initialisations on token grids: where a new Jacobi window position starts.

Speculative Jacobi decoding (Teng et al. 2024, "Accelerating Auto-regressive Text-to-Image Generation
with Training-free Speculative Jacobi Decoding") starts each new window position from a random token.
Neighbouring grid tokens (image tokens, the tokens of one video frame) are strongly correlated, so
starting from a token of the grid near the new position (the one to the left, or the one above) gives
drafts that are accepted more often; which neighbour works best depends on the family, hence several
interchangeable initialisers. Images (``mmaccel.image.spatial``) and video frames (``mmaccel.video.temporal``,
inside the first frame) both use them, so they live in the core.

Every class here is a callable with the drafter's hook signature (:class:`~mmaccel.drafting.jacobi.WindowInit`)::

    init(context [B, N], index [B, K], uniforms [B, K]) -> tokens [B, K]

``context[b, i]`` is generated token ``i`` of sample ``b`` for every ``i < index[b, 0]`` (later entries are
undefined), ``index`` holds the contiguous generated-token indices to fill and ``uniforms`` the sample's
own random numbers in [0, 1), so results follow the per-sample generators and not torch's global RNG.
:class:`GridInit` checks those arguments once for every initialiser (spatial or temporal).

Layout: generated token ``i`` sits at row ``i // width``, column ``i % width``. Families that end every
row with an end-of-line token (Lumina-mGPT, Emu3) pass ``row_end``: a row then spans ``width + 1``
indices and its last one is always filled with ``row_end``; the neighbourhoods skip it.
"""

from __future__ import annotations

import torch


class GridInit:
    """Base of window initialisers: checks the hook's arguments, then calls :meth:`fill` on long tensors."""

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        check_hook_args(context, index, uniforms)
        return self.fill(context.long(), index.long(), uniforms)

    def fill(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def check_hook_args(context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> None:
    """Refuse arguments that do not follow the :class:`~mmaccel.drafting.jacobi.WindowInit` contract."""
    if context.dim() != 2:
        raise ValueError(f"context must be [batch, N], got shape {tuple(context.shape)}")
    if index.dim() != 2 or index.shape[0] != context.shape[0]:
        raise ValueError(f"index must be [batch, K] with batch {context.shape[0]}, got {tuple(index.shape)}")
    if uniforms.shape != index.shape:
        raise ValueError(f"uniforms must have index's shape {tuple(index.shape)}, got {tuple(uniforms.shape)}")
    if index.numel() and int(index[:, 0].max()) > context.shape[1]:
        raise ValueError(f"index starts past the end of context (N = {context.shape[1]})")


class SpatialInit(GridInit):
    """Common layout handling; subclasses implement :meth:`fill` for the image positions.

    ``vocab`` is the number of image tokens (ids ``0..vocab-1``) or a 1-D tensor of the allowed image
    token ids (for unified vocabularies where image tokens are a sub-range); positions with no usable
    neighbour get a token drawn uniformly from it with their uniform number.
    """

    def __init__(self, vocab: int | torch.Tensor, width: int | None = None, row_end: int | None = None):
        if isinstance(vocab, int):
            if vocab < 1:
                raise ValueError(f"vocab must be >= 1, got {vocab}")
            vocab = torch.arange(vocab)
        vocab = torch.as_tensor(vocab, dtype=torch.long)
        if vocab.dim() != 1 or vocab.numel() == 0:
            raise ValueError(f"vocab must be a positive int or a non-empty 1-D tensor of ids, got {vocab.shape}")
        if width is not None and width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if row_end is not None and width is None:
            raise ValueError("row_end needs width: the row-end token follows every `width` image tokens")
        self.vocab = vocab
        self.width = width
        self.row_end = row_end

    def __call__(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        tokens = super().__call__(context, index, uniforms)
        if self.row_end is not None:
            tokens = torch.where(self._is_row_end(index), torch.full_like(tokens, self.row_end), tokens)
        return tokens

    # Layout arithmetic. An image ordinal counts image tokens only (row-end tokens skipped).

    @property
    def _stride(self) -> int | None:
        if self.width is None:
            return None
        return self.width + 1 if self.row_end is not None else self.width

    def _is_row_end(self, index: torch.Tensor) -> torch.Tensor:
        return index % self._stride == self.width

    def _ordinal(self, index: torch.Tensor) -> torch.Tensor:
        """Image ordinal of an image index, or the number of image tokens before any index."""
        return index - index // self._stride if self.row_end is not None else index

    def _index(self, ordinal: torch.Tensor) -> torch.Tensor:
        if self.row_end is None:
            return ordinal
        return ordinal // self.width * self._stride + ordinal % self.width

    def _random(self, uniforms: torch.Tensor) -> torch.Tensor:
        vocab = self.vocab.to(uniforms.device)
        pick = (uniforms * vocab.numel()).long().clamp_(0, vocab.numel() - 1)
        return vocab[pick]

    def _read(self, context: torch.Tensor, ordinal: torch.Tensor, known: torch.Tensor, fallback: torch.Tensor):
        """Tokens at image ``ordinal`` where ``known``, ``fallback`` elsewhere (gathers stay in range)."""
        idx = self._index(ordinal).clamp(0, max(context.shape[1] - 1, 0))
        if context.shape[1] == 0:
            return fallback
        return torch.where(known, context.gather(1, idx), fallback)

    def _known_images(self, index: torch.Tensor) -> torch.Tensor:
        """Number of known image tokens per sample, ``[B, 1]``."""
        return self._ordinal(index[:, :1])

    def _last_known(self, context: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """The last known image token for every position (random where nothing is known yet)."""
        m = self._known_images(index).expand_as(index)
        return self._read(context, m - 1, m > 0, self._random(uniforms))


class RandomInit(SpatialInit):
    """Uniformly random image tokens: the initialisation of the original Jacobi / SJD decoders."""

    def fill(self, context, index, uniforms):
        return self._random(uniforms)


class HorizontalRepeat(SpatialInit):
    """The token to the left. Every new position's left neighbour is new too except the first one's,
    so all new positions repeat the last known image token (random when nothing is known yet)."""

    def fill(self, context, index, uniforms):
        return self._last_known(context, index, uniforms)


class HorizontalSample(SpatialInit):
    """A token drawn uniformly from the last ``span`` known image tokens (default ``span = width``).

    With ``span = width`` this is the raster neighbourhood one row deep: the known part of the current
    row plus the end of the row above, i.e. the colours the image shows around the frontier. Each
    position draws independently with its own uniform, so a window gets a mix of nearby tokens rather
    than one repeated token. Random where nothing is known yet.
    """

    def __init__(
        self,
        vocab: int | torch.Tensor,
        width: int | None = None,
        row_end: int | None = None,
        span: int | None = None,
    ):
        super().__init__(vocab, width, row_end)
        span = span if span is not None else width
        if span is None or span < 1:
            raise ValueError(f"span must be >= 1 (or give width to use one row), got {span}")
        self.span = span

    def fill(self, context, index, uniforms):
        m = self._known_images(index).expand_as(index)
        reach = m.clamp(max=self.span)
        back = (uniforms * reach).long().clamp_(max=(reach - 1).clamp(min=0))
        return self._read(context, m - 1 - back, m > 0, self._random(uniforms))


class VerticalRepeat(SpatialInit):
    """The token above (same column, previous row). Where that row is not known yet (the first row, or
    positions more than one row past the frontier) the token to the left is used, which for a new
    position is the last known image token, as in :class:`HorizontalRepeat`."""

    def __init__(self, vocab: int | torch.Tensor, width: int, row_end: int | None = None):
        if width is None:
            raise ValueError("VerticalRepeat needs width (the grid's row length in image tokens)")
        super().__init__(vocab, width, row_end)

    def fill(self, context, index, uniforms):
        m = self._known_images(index)
        above = self._ordinal(index) - self.width
        left = self._last_known(context, index, uniforms)
        return self._read(context, above, (above >= 0) & (above < m), left)
