"""Multiple cross-modal token prediction (MCTP) heads for codec streams, verified (VITA-Audio, Long et al. 2025).

VITA-Audio's MCTP modules guess the next frames' audio tokens from the backbone's hidden state in the same forward
and commit them unverified (3-5x fewer forwards, lossy). Here the same idea drafts a window for
:class:`~mmaccel.streams.StreamDecoder`, whose acceptance rule verifies every guess, so under the exact or SJD
rule the output is AR's (tested) and relaxed rules (LANTERN, GSD) trade quality for acceptance as with any draft.

Design: :class:`FrameHeads` holds ``H`` heads in Medusa's form (the core :class:`~mmaccel.drafting.heads.DraftHeads`
with a ``K x V`` output reshaped per codebook): head ``j`` maps the hidden state at the position that predicted step
``s`` to the ``K`` codebook distributions of step ``s + 1 + j``, all codebooks of a step drawn independently
(VITA-Audio chains small transformer blocks, each reading the previous block's state and tokens; the Medusa form
keeps the heads one matrix product each and reuses the core's heads). :class:`FrameHeadsDrafter` draws a window of
``H`` steps from them after every verification, from the hidden state of the row whose ``p`` gave the step just
committed, with ``q`` the heads' distributions, so the rule's ratio ``p / q`` is the true one.
:func:`frame_heads_loss` is the distillation objective (KL to the frozen backbone's own distributions, teacher
forcing over step tokens), :func:`frame_heads_acceptance` its held-out figure; :mod:`mmaccel.audio.training.train_heads`
distils them for the speech default model.

``FrameHeads(..., hinted=True)`` are the core's hinted heads (:mod:`mmaccel.drafting.heads`) with frame repeat as
the hint: every head also reads the step just committed, the one its hidden state produced and so cannot know
(the sum of its codebooks' hint embeddings). Neither VITA-Audio nor Medusa does this; EAGLE and Hydra feed the
sampled token back for the same reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .checkpoint import load_checked, read_state_dict
from .drafting.base import check_window
from .drafting.branch import branch_children, check_branch
from .drafting.heads import DraftHeads
from .io import write_atomic
from .sampling import SamplingConfig, sample, target_probs


class FrameHeads(nn.Module):
    """``num_heads`` MCTP heads over ``num_streams`` codebooks of ``vocab_size`` tokens: ``[..., D]`` hidden
    states to ``[..., num_heads, num_streams, vocab_size]`` logits (head ``j``: the step ``j + 1`` after the one
    the backbone's own heads predict)."""

    def __init__(
        self,
        hidden_size: int,
        num_streams: int,
        vocab_size: int,
        num_heads: int = 4,
        num_layers: int = 1,
        hinted: bool = False,
    ):
        super().__init__()
        self.num_streams, self.vocab_size = num_streams, vocab_size
        self.heads = DraftHeads(hidden_size, num_streams * vocab_size, num_heads, num_layers, hinted=hinted)

    @property
    def num_heads(self) -> int:
        return self.heads.num_heads

    @property
    def hinted(self) -> bool:
        return self.heads.hinted

    def forward(self, hidden: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden`` ``[..., D]`` (hinted heads: with ``frame`` ``[..., K]``, the step ``hidden`` predicted) to
        ``[..., H, K, V]`` logits."""
        hints = None
        if frame is not None:  # codebook k's token t is hint id k * V + t, the same for every head
            ids = frame + self.vocab_size * torch.arange(self.num_streams, device=frame.device)
            hints = ids.unsqueeze(-2).expand(*ids.shape[:-1], self.num_heads, self.num_streams)
        logits = self.heads(hidden, hints)
        return logits.view(*logits.shape[:-1], self.num_streams, self.vocab_size)


class FrameHeadsDrafter:
    """A window of ``heads.num_heads`` steps x ``K`` codebooks drawn from MCTP heads (see the module docstring).

    ``branch="top"`` takes each head's most likely token per codebook instead of a draw, with a one-hot ``q``
    (:func:`~mmaccel.drafting.branch.branch_children`, as a heads chain does); the rules stay lossless with it.

    :class:`~mmaccel.streams.StreamDecoder` runs its forwards with hidden states for a drafter with
    ``needs_hidden`` and hands it, through :meth:`see`, the hidden state that predicted the last committed step.

    ``tail=N`` drafts ``N`` steps past the heads (our addition): ``tail_from="head"`` (default) draws each further
    frame from the last head's distribution, which is then its ``q``; ``"repeat"`` repeats the last head's drafted
    frame with a one-hot ``q`` (a function of the drafts before it). Either way every rule keeps its guarantee.
    Under LANTERN the drawn tail pays and the repeated one hardly does: LANTERN's ratio divides by ``q(code)``,
    which is 1 for a one-hot draft.
    """

    needs_hidden = True
    coupling = "none"
    init = "heads"

    def __init__(
        self,
        heads: FrameHeads,
        sampling: SamplingConfig | None = None,
        branch: str = "sample",
        tail: int = 0,
        tail_from: str = "head",
    ):
        if tail < 0:
            raise ValueError(f"tail must be >= 0, got {tail}")
        if tail_from not in ("repeat", "head"):
            raise ValueError(f"tail_from must be 'repeat' or 'head', got {tail_from!r}")
        self.heads = heads.eval()
        self.branch = check_branch(branch)
        self.tail, self.tail_from = int(tail), tail_from
        self.window = check_window(heads.num_heads + self.tail)
        self.sampling = sampling  # None: the decoder's own (its temperature)
        self._hidden: torch.Tensor | None = None

    def see(self, hidden: torch.Tensor, sampling: SamplingConfig) -> None:
        """The backbone state ``[B, D]`` that predicted the last committed step; drafts follow from it."""
        self._hidden, self._sampling = hidden, self.sampling or sampling

    def _draw(self, state) -> None:
        if self._hidden is None:
            raise RuntimeError("FrameHeadsDrafter: see(hidden) must come before begin/update")
        k, v = self.heads.num_streams, self.heads.vocab_size
        if (k, v) != (state.generated.shape[2], state.vocab_size):
            raise ValueError(
                f"MCTP heads are for {k} codebooks x {v} tokens, the model has "
                f"{state.generated.shape[2]} x {state.vocab_size}"
            )
        weight = next(self.heads.parameters())
        frame = state.last_frame if self.heads.hinted else None  # the step the hidden state produced
        logits = self.heads(self._hidden.to(weight.device, weight.dtype), frame).float()  # [B, H, K, V]
        self.q = target_probs(logits, self._sampling)
        h = self.heads.num_heads
        if self.branch == "top":
            tokens, q = branch_children(self.q.flatten(1, 2), 1, "top", state.rng)
            self.tokens, self.q = tokens.view(-1, h, k), q.view(self.q.shape)
        else:
            self.tokens = sample(self.q, state.rng.uniform(h, k))
        if self.tail:
            last = self.q[:, -1:].expand(-1, self.tail, -1, -1)
            if self.tail_from == "repeat":
                tail = self.tokens[:, -1:].expand(-1, self.tail, -1)
                q = torch.nn.functional.one_hot(tail, v).to(last.dtype)
            else:
                tail, q = sample(last, state.rng.uniform(self.tail, k)), last
            self.tokens, self.q = torch.cat([self.tokens, tail], 1), torch.cat([self.q, q], 1)

    @torch.no_grad()
    def begin(self, state) -> None:
        self._draw(state)

    def propose(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens, self.q

    @torch.no_grad()
    def update(self, state, p: torch.Tensor, n: torch.Tensor) -> None:
        self._draw(state)

    def resize(self, state, window: int) -> None:
        raise ValueError("MCTP heads draft a fixed window (one step per head); window='auto' does not apply")


@torch.no_grad()
def teacher_states(model, steps: torch.Tensor, prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen stream model teacher forced on step tokens ``steps`` ``[B, T, K]`` after ``prompt``: its logits
    ``[B, T, K, V]`` (row ``i``: the distributions of step ``i``) and hidden states ``[B, T, D]`` (row ``i``: the
    state that predicted step ``i``, from which the heads guess steps ``i + 1 ..``)."""
    b, t, _ = steps.shape
    cache = model.new_cache(b, int(prompt.lengths.max()) + t + 1)
    first = model.prefill(prompt, cache, output_hidden=True)
    positions = prompt.lengths.to(steps.device)[:, None] + torch.arange(t - 1, device=steps.device)
    out = model.forward(steps[:, :-1], positions, cache, output_hidden=True)
    return torch.cat([first.logits, out.logits], 1), torch.cat([first.hidden, out.hidden], 1)


def frame_heads_loss(model, heads: FrameHeads, steps: torch.Tensor, prompt, temperature: float = 1.0) -> torch.Tensor:
    """The distillation loss of ``heads`` on step tokens ``steps`` ``[B, T, K]`` after ``prompt`` (teacher forcing
    through the frozen stream model): head ``j`` at the position predicting step ``t`` matches the model's own
    distributions of step ``t + 1 + j`` (KL, summed over codebooks, averaged over positions and heads)."""
    b, t, k = steps.shape
    h = heads.num_heads
    if t < h + 2:
        raise ValueError(f"steps: distillation needs at least num_heads + 2 = {h + 2} steps, got {t}")
    logits, hidden = teacher_states(model, steps, prompt)
    teacher = (logits.float() / temperature).log_softmax(-1)
    frame = steps if heads.hinted else None  # row i's hint: step i, which that row predicted
    student = (heads(hidden.float(), frame) / temperature).log_softmax(-1)  # [B, T, H, K, V]
    loss = hidden.new_zeros(())
    for j in range(h):  # a handful of heads, not a per-token loop
        span = t - 1 - j
        target, pred = teacher[:, 1 + j : 1 + j + span], student[:, :span, j]
        kl = nn.functional.kl_div(pred, target, log_target=True, reduction="none").sum(-1)  # [B, span, K]
        loss = loss + kl.sum(-1).mean() / h
    return loss


@torch.no_grad()
def frame_heads_acceptance(
    model, heads: FrameHeads, steps: torch.Tensor, prompt, temperature: float = 1.0, skip: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced acceptance of the heads' drafts under the exact rule (SJD's is the same ``min(1, p / q)``).

    Head ``j`` drafts step ``i + 1 + j`` from the state at row ``i``; codebook ``k`` of that draft is accepted
    with probability ``sum_x min(p_k(x), q_jk(x))`` (both at ``temperature``) and the whole step, as
    :class:`~mmaccel.streams.StreamDecoder` commits it, when every codebook is (the codebooks of a step are drawn
    independently), so the frame acceptance is the product over codebooks. Rows ``i < skip`` (default ``K``:
    the delay pattern's pinned first steps) are left out. Returns per position the frame acceptance of every head
    ``[N, H]`` and the per-codebook acceptance ``[N, H, K]``."""
    b, t, k = steps.shape
    h = heads.num_heads
    skip = k if skip is None else skip
    span = t - h - skip
    if span < 1:
        raise ValueError(f"steps: acceptance needs more than num_heads + skip = {h + skip} steps, got {t}")
    logits, hidden = teacher_states(model, steps, prompt)
    p = (logits.float() / temperature).softmax(-1)  # [B, T, K, V]
    q = (heads(hidden.float(), steps if heads.hinted else None) / temperature).softmax(-1)  # [B, T, H, K, V]
    rows = torch.arange(skip, skip + span, device=steps.device)
    per_book = torch.stack(
        [torch.minimum(p[:, rows + 1 + j], q[:, rows, j]).sum(-1) for j in range(h)], 2
    )  # [B, span, H, K]
    per_book = per_book.reshape(-1, h, k).clamp(max=1.0)
    return per_book.prod(-1), per_book


#: The fields of ``heads_config.json`` that shape a :class:`FrameHeads`.
FRAME_HEADS_CONFIG = ("hidden_size", "num_streams", "vocab_size", "num_heads", "num_layers", "hinted")


def save_frame_heads(heads: FrameHeads, folder, record: dict | None = None) -> None:
    """``heads.safetensors`` and ``heads_config.json`` (and ``heads_train.json`` from ``record``) in ``folder``,
    each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: v.detach().contiguous() for key, v in heads.state_dict().items()}
    write_atomic(folder / "heads.safetensors", lambda tmp: save_file(state, tmp))
    config = {
        "hidden_size": heads.heads.hidden_size,
        "num_streams": heads.num_streams,
        "vocab_size": heads.vocab_size,
        "num_heads": heads.num_heads,
        "num_layers": len(heads.heads.heads[0]) - 1,
        "hinted": heads.hinted,
    }
    for name, data in (("heads_config.json", config), ("heads_train.json", record)):
        if data is not None:
            text = json.dumps(data, indent=1)
            write_atomic(folder / name, lambda tmp, text=text: Path(tmp).write_text(text))


def load_frame_heads(folder) -> FrameHeads | None:
    """The :class:`FrameHeads` saved in ``folder`` by :func:`save_frame_heads`; ``None`` where it holds none."""
    folder = Path(folder)
    path, config_path = folder / "heads.safetensors", folder / "heads_config.json"
    if not path.is_file():
        return None
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} has no heads_config.json beside it")
    config = json.loads(config_path.read_text())
    heads = FrameHeads(**{key: config[key] for key in FRAME_HEADS_CONFIG if key in config})  # older: no "hinted"
    load_checked(heads, read_state_dict(path), str(path))
    return heads.eval()


__all__ = [
    "FrameHeads",
    "FrameHeadsDrafter",
    "frame_heads_acceptance",
    "frame_heads_loss",
    "load_frame_heads",
    "save_frame_heads",
    "teacher_states",
]
