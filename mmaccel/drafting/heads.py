"""Multi-head drafting: small heads on the target's last hidden state guess the next tokens in the same
forward (Cai et al. 2024, "Medusa"; also XSpecMesh's multi-head mesh drafting and VITA-Audio's MCTP modules).

The heads live in the core because mesh and audio reuse them, and so does their distillation.

*Hinted* heads (``DraftHeads(..., hinted=True)``, our addition, not in Medusa or XSpecMesh) also read a guess for
the token they draft: a modality's Jacobi initialisation (a :class:`~mmaccel.drafting.jacobi.WindowInit`, such as
the mesh's face-structure copy) proposes each drafted position's token from the committed context, and head ``k``
adds that token's learned embedding to the hidden state. A plain head has to recover from one hidden state what
the structure already says, and does not know the token that state just produced; a hinted head learns when the
guess holds. The hint is a deterministic function of committed tokens, so ``q`` stays the
distribution the draft is drawn from and the exact rule stays lossless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..models.base import ModelOutput, TokenModel, TokenPrompt
from ..sampling import SamplingConfig, sample, target_probs
from ..tree import TreeShape
from .base import Draft, Drafter, check_window
from .branch import branch_children, check_branch
from .jacobi import WindowInit


class ResBlock(nn.Module):
    """Medusa's residual block: ``h + SiLU(W h)``, initialised to the identity (zero ``W``)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + nn.functional.silu(self.linear(h))


class DraftHeads(nn.Module):
    """``num_heads`` heads; head ``k`` maps the hidden state at position ``t`` to logits for token ``t + 2 + k``
    (the target's own head predicts ``t + 1``). Each head: ``num_layers`` residual blocks and a vocabulary
    projection, optionally initialised from the target's output layer as Medusa does."""

    def __init__(
        self, hidden_size: int, vocab_size: int, num_heads: int = 4, num_layers: int = 1, hinted: bool = False
    ):
        super().__init__()
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.heads = nn.ModuleList(
            nn.Sequential(*[ResBlock(hidden_size) for _ in range(num_layers)], nn.Linear(hidden_size, vocab_size))
            for _ in range(num_heads)
        )
        # Zero-initialised, so hinted heads start as the plain heads they may be warm-started from.
        self.hint = nn.Embedding(vocab_size, hidden_size) if hinted else None
        if self.hint is not None:
            nn.init.zeros_(self.hint.weight)

    @property
    def hinted(self) -> bool:
        """Whether each head reads a hint token (see the module docstring)."""
        return self.hint is not None

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def init_from_output(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copy the target's output projection into every head's last layer."""
        with torch.no_grad():
            for head in self.heads:
                head[-1].weight.copy_(weight)
                if bias is not None:
                    head[-1].bias.copy_(bias)
                else:
                    head[-1].bias.zero_()

    def init_hint_from_output(self, weight: torch.Tensor, boost: float = 3.0) -> None:
        """Start the hint embedding as a copy prior: token ``x``'s hint embedding is the target's output row of
        ``x`` scaled so that, through that output layer, it raises ``x``'s logit by ``boost``."""
        if self.hint is None:
            raise ValueError("these heads take no hints")
        with torch.no_grad():
            rows = weight.float()
            self.hint.weight.copy_(boost * rows / rows.pow(2).sum(-1, keepdim=True).clamp(min=1e-12))

    def forward(self, hidden: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., D]`` hidden states (and, for hinted heads, ``[..., num_heads]`` hint tokens, or
        ``[..., num_heads, S]`` for hints of ``S`` tokens each) to ``[..., num_heads, V]`` logits."""
        if (hints is None) == self.hinted:
            raise ValueError("hinted heads need hint tokens" if self.hinted else "these heads take no hint tokens")
        if hints is None:
            return torch.stack([head(hidden) for head in self.heads], -2)
        e = self.hint(hints)  # [..., K, D]
        if e.dim() == hidden.dim() + 2:  # several tokens a hint (a frame of codebooks): their embeddings add up
            e = e.sum(-2)
        x = hidden.unsqueeze(-2) + e
        return torch.stack([head(x[..., k, :]) for k, head in enumerate(self.heads)], -2)


def heads_state_layers(state: dict[str, torch.Tensor]) -> int:
    """The residual blocks per head in a :class:`DraftHeads` state dict (``heads.<k>.<i>...`` keys; the last
    index of a head is its vocabulary projection)."""
    indices = [int(name.split(".")[2]) for name in state if name.startswith("heads.")]
    if not indices:
        raise ValueError("the state dict holds no draft heads (no 'heads.' keys)")
    return max(indices)


def deepened_state(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """``state`` of heads with fewer residual blocks, as heads of ``num_layers`` blocks that compute the same
    logits: the new blocks sit before each vocabulary projection with zero weight and zero bias, so each adds
    ``SiLU(0) = 0``. Distillation warm-starts wider heads from trained ones this way."""
    layers = heads_state_layers(state)
    if num_layers < layers:
        raise ValueError(f"cannot drop residual blocks: the heads have {layers}, asked for num_layers={num_layers}")
    out = {}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] == "heads" and int(parts[2]) == layers:  # the projection moves to the new last index
            parts[2] = str(num_layers)
        out[".".join(parts)] = value
    heads = {int(name.split(".")[1]) for name in state if name.startswith("heads.")}
    for k in heads:
        weight = state[f"heads.{k}.{layers}.weight"]
        for i in range(layers, num_layers):
            out[f"heads.{k}.{i}.linear.weight"] = weight.new_zeros(weight.shape[1], weight.shape[1])
            out[f"heads.{k}.{i}.linear.bias"] = weight.new_zeros(weight.shape[1])
    return out


class MultiHeadDrafter(Drafter):
    """Drafts ``heads.num_heads`` tokens from the hidden state that produced the last committed token.

    ``tree="3x2x1"`` drafts Medusa's static tree instead (at most one depth per head): the nodes at depth ``d``
    take head ``d``'s ``k_d`` children, the same below every parent, picked by ``branch`` (``"top"`` or ``"sample"``,
    see :mod:`mmaccel.drafting.branch`). ``branch`` picks a chain's drafts the same way: ``"sample"`` draws each
    from its head (the chain's default), ``"top"`` takes each head's most likely token, with a
    one-hot ``q`` (Medusa's greedy candidates; a tree's default). Either keeps the exact rule lossless.

    Hinted heads need ``hint``, the window initialisation they were distilled with (:func:`draft_hints`).

    ``tail`` (a window initialisation, with ``tail_length``) extends a chain past the heads: the modality's own
    structural guess of each further token (the mesh face copy), computed from the committed context and the
    heads' drafts with fixed uniforms. So each tail token is a function of what precedes it, its ``q`` is one-hot
    and the exact rule stays lossless. Our addition to Medusa / XSpecMesh: heads reach as far as there are heads,
    a layout's structure further.
    """

    needs_hidden = True

    def __init__(
        self,
        heads: DraftHeads,
        sampling: SamplingConfig | None = None,
        tree: str | None = None,
        branch: str | None = None,
        hint: WindowInit | None = None,
        tail: WindowInit | None = None,
        tail_length: int = 0,
    ):
        if (tail is None) != (tail_length == 0) or tail_length < 0:
            raise ValueError("a tail needs both its init and a tail_length >= 1")
        if tail is not None and tree is not None:
            raise ValueError("a tail extends a chain of drafts; a tree takes none")
        if heads.hinted and hint is None:
            raise ValueError("hinted draft heads need the hint (window init) they were distilled with")
        if hint is not None and not heads.hinted:
            raise ValueError("a hint was given but these draft heads take none (distil hinted heads first)")
        self.hint = hint
        self.heads = heads.eval()
        self.tree = None if tree is None else TreeShape.parse(tree)
        self.branch = check_branch(branch or ("sample" if self.tree is None else "top"))
        if self.tree is not None and self.tree.depth > heads.num_heads:
            raise ValueError(f"tree {self.tree} is {self.tree.depth} deep but there are only {heads.num_heads} heads")
        self.tail, self.tail_length = tail, int(tail_length)
        self.window = check_window(heads.num_heads + self.tail_length) if self.tree is None else self.tree.depth
        self.sampling = sampling

    per_sample = ("_tokens", "_q")

    @property
    def nodes(self) -> int:
        return self.window if self.tree is None else self.tree.nodes

    def logits(self, state, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, num_heads, V]`` head logits for the tokens after the committed ones (hinted heads: with hints)."""
        hints = None
        if self.hint is not None:
            index = state.count[:, None] + torch.arange(self.heads.num_heads, device=state.device)
            hints = draft_hints(self.hint, state.generated, index)
        return self.heads(hidden.to(next(self.heads.parameters()).dtype), hints).float()

    def _draft(self, state, hidden: torch.Tensor) -> None:
        self._q = target_probs(self.logits(state, hidden), self.sampling or state.sampling)
        self._pick_chain(state)

    def _pick_chain(self, state) -> None:
        """A chain's drafts from the heads' distributions ``_q`` (a tree's nodes are picked in ``propose``)."""
        if self.tree is not None:
            return
        if self.branch == "top":
            self._tokens, self._q = branch_children(self._q, 1, "top", state.rng)
        else:
            self._tokens = sample(self._q, state.rng.uniform(self.heads.num_heads))
        if self.tail is not None:
            self._extend_tail(state)

    def _extend_tail(self, state) -> None:
        """Append ``tail_length`` one-hot drafts: the tail init's guess given the context and the heads' drafts."""
        h = self.heads.num_heads
        context = state.generated.clone()
        span = context.shape[1] - 1
        context.scatter_(1, (state.count[:, None] + torch.arange(h, device=state.device)).clamp(max=span), self._tokens)
        index = state.count[:, None] + h + torch.arange(self.tail_length, device=state.device)
        tail = draft_hints(self.tail, context, index)
        q = torch.nn.functional.one_hot(tail, self._q.shape[-1]).to(self._q.dtype)
        self._tokens, self._q = torch.cat([self._tokens, tail], 1), torch.cat([self._q, q], 1)

    @torch.no_grad()
    def begin(self, state, prefill: ModelOutput) -> None:
        if self.heads.vocab_size != state.vocab_size:
            raise ValueError(
                f"heads vocabulary ({self.heads.vocab_size}) differs from the target's ({state.vocab_size})"
            )
        self._draft(state, prefill.hidden[:, 0])

    def propose(self, state) -> Draft:
        if self.tree is None:
            return Draft(self._tokens, self._q)
        shape, tokens, qs = self.tree, [], []
        for d, k in enumerate(shape.branching):
            token, q = branch_children(self._q[:, d : d + 1], k, self.branch, state.rng)
            parents_here = shape.level_sizes[d] // k
            tokens.append(token.repeat(1, parents_here))
            qs.append(q.repeat(1, parents_here, 1))
        parents = shape.parents.to(state.device).expand(state.batch_size, -1)
        return Draft(torch.cat(tokens, 1), torch.cat(qs, 1), parents)

    @torch.no_grad()
    def update(self, state, out: ModelOutput, p: torch.Tensor, accepted: torch.Tensor) -> None:
        # Row `accepted` of the verify forward produced the distribution of the step's final token.
        index = accepted.view(-1, 1, 1).expand(-1, 1, out.hidden.shape[-1])
        self._draft(state, out.hidden.gather(1, index).squeeze(1))


#: The uniforms a hint is drawn with: fixed, so the hint is a function of the context alone, the same in
#: distillation and in drafting.
HINT_UNIFORM = 0.5


def draft_hints(hint: WindowInit, context: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` hint tokens for generated indices ``index`` (contiguous, ``index[:, 0]`` the committed count),
    from ``context`` ``[B, N]`` of which only the committed part ``[:, :index[:, 0]]`` is read."""
    return hint(context, index, torch.full(index.shape, HINT_UNIFORM, device=index.device))


def teacher_hints(hint: WindowInit, tokens: torch.Tensor, prompt_length: int, num_heads: int) -> torch.Tensor:
    """``[B, T, num_heads]``: the hints drafting would hand the heads at each position of teacher-forced
    ``tokens`` ``[B, T]`` (prompt of ``prompt_length`` tokens, then generated tokens).

    Position ``t`` predicts token ``t + 1``; at inference that token is committed when the heads draft, so head
    ``k`` drafts generated index ``t + 2 - prompt_length + k`` with everything before it committed. Each position
    sees only that committed part (the rest of the row is zeroed, so an init cannot peek at the answer).
    """
    b, t = tokens.shape
    context = tokens[:, prompt_length:]
    n = context.shape[1]
    # [T]: the committed count (clamped at both ends: the positions past it draft tokens no loss reads)
    start = (torch.arange(t, device=tokens.device) + 2 - prompt_length).clamp(0, n)
    visible = torch.arange(n, device=tokens.device)[None, None] < start[None, :, None]  # [1, T, N]
    rows = torch.where(visible, context[:, None], 0).reshape(b * t, n)
    index = (start[:, None] + torch.arange(num_heads, device=tokens.device)).expand(b, t, num_heads)
    return draft_hints(hint, rows, index.reshape(b * t, num_heads)).reshape(b, t, num_heads)


def decoding_teacher(
    target: TokenModel, prompt_length: int, prompt: Callable[[torch.Tensor], Any] | None = None
) -> Callable[[torch.Tensor], ModelOutput]:
    """Teacher-forced outputs of a *decoding* target: the model inside the wrappers a decoder samples
    (:class:`~mmaccel.models.CFGModel`, a modality's mask), so the heads learn the distribution the rule checks
    their drafts against rather than the bare model's.

    The returned map takes ``[B, T]`` token rows whose first ``prompt_length`` tokens are the prompt (made into
    the target's prompt by ``prompt``, default a :class:`~mmaccel.models.TokenPrompt`), prefills it and forwards
    the rest as one window. Its output covers positions ``prompt_length - 1 .. T - 1``: ``[B, T - prompt_length +
    1, ...]`` logits and hidden states (the hidden states are the conditional row's under guidance).
    """
    make_prompt = prompt or (lambda ids: TokenPrompt(ids, torch.full((ids.shape[0],), ids.shape[1])))

    def run(tokens: torch.Tensor) -> ModelOutput:
        b, t = tokens.shape
        cache = target.new_cache(b, t)
        first = target.prefill(make_prompt(tokens[:, :prompt_length]), cache, output_hidden=True)
        positions = torch.arange(prompt_length, t, device=tokens.device).expand(b, -1)
        rest = target.forward(tokens[:, prompt_length:], positions, cache, output_hidden=True)
        return ModelOutput(torch.cat([first.logits, rest.logits], 1), torch.cat([first.hidden, rest.hidden], 1))

    return run


def bare_teacher(model: TokenModel) -> Callable[[torch.Tensor], ModelOutput]:
    """Teacher-forced outputs of ``model`` itself at every position of ``[B, T]`` rows (run from position 0)."""

    def run(tokens: torch.Tensor) -> ModelOutput:
        b, t = tokens.shape
        positions = torch.arange(t, device=tokens.device).expand(b, t)
        return model.forward(tokens, positions, model.new_cache(b, t), output_hidden=True)

    return run


def kl_to(target_logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` summed over the last axis; tokens a mask gave ``p = 0`` (``log p = -inf``) add nothing."""
    p = target_logp.exp()
    return (p * (torch.where(p > 0, target_logp, 0.0) - logq)).sum(-1)


def distill_heads(
    model: TokenModel,
    heads: DraftHeads,
    batches: Iterable[torch.Tensor],
    lr: float = 1e-3,
    temperature: float = 1.0,
    hints: Callable[[torch.Tensor], torch.Tensor] | None = None,
    teacher: Callable[[torch.Tensor], ModelOutput] | None = None,
) -> list[float]:
    """Train ``heads`` to match the frozen target's own next-token distributions (KL, teacher forcing).

    ``batches`` yields token sequences ``[B, T]`` the target is run on from position 0 (for conditional models,
    include the conditioning tokens). Head ``k`` at position ``t`` learns the target's distribution at
    ``t + 1 + k``, i.e. of token ``t + 2 + k``. Hinted heads need ``hints``, a map from a batch to its
    ``[B, T, num_heads]`` hint tokens (:func:`teacher_hints`). ``teacher`` (default: :func:`bare_teacher` of
    ``model``) gives the hidden states and the distributions to match; one covering only the last positions,
    such as :func:`decoding_teacher`'s, trains the heads there. Returns the loss of each batch.
    """
    teacher = teacher or bare_teacher(model)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=lr)
    heads.train()
    losses = []
    for tokens in batches:
        tokens = tokens.to(model.device)
        k = heads.num_heads
        with torch.no_grad():
            out = teacher(tokens)
            target = (out.logits.float() / temperature).log_softmax(-1)
        t = target.shape[1]  # the positions the teacher covers: the last t of the row
        if t < k + 2:
            raise ValueError(f"training sequences need at least num_heads + 2 = {k + 2} positions, got {t}")
        hint = hints(tokens)[:, tokens.shape[1] - t :] if hints is not None else None
        student = (heads(out.hidden.float(), hint) / temperature).log_softmax(-1)  # [B, t, K, V]
        loss = 0.0
        for j in range(k):  # a handful of heads, not a per-token loop
            span = t - 1 - j
            loss = loss + kl_to(target[:, 1 + j : 1 + j + span], student[:, :span, j]).sum() / (span * len(tokens))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    heads.eval()
    return losses
