"""Multi-head drafting: small heads on the target's last hidden state guess the next tokens in the same
forward (Cai et al. 2024, "Medusa"; also XSpecMesh's multi-head mesh drafting and VITA-Audio's MCTP modules).

The heads live in the core because mesh and audio reuse them, and so does their distillation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..models.base import ModelOutput, TokenModel
from ..sampling import SamplingConfig, sample, target_probs
from ..tree import TreeShape
from .base import Draft, Drafter, check_window
from .branch import branch_children, check_branch


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

    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int = 4, num_layers: int = 1):
        super().__init__()
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        self.heads = nn.ModuleList(
            nn.Sequential(*[ResBlock(hidden_size) for _ in range(num_layers)], nn.Linear(hidden_size, vocab_size))
            for _ in range(num_heads)
        )

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

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` hidden states to ``[..., num_heads, V]`` logits."""
        return torch.stack([head(hidden) for head in self.heads], -2)


class MultiHeadDrafter(Drafter):
    """Drafts ``heads.num_heads`` tokens from the hidden state that produced the last committed token.

    ``tree="3x2x1"`` drafts Medusa's static tree instead (at most one depth per head): the nodes at depth ``d``
    take head ``d``'s ``k_d`` children, the same below every parent, picked by ``branch`` (``"top"`` or ``"sample"``,
    see :mod:`mmaccel.drafting.branch`).
    """

    needs_hidden = True

    def __init__(
        self, heads: DraftHeads, sampling: SamplingConfig | None = None, tree: str | None = None, branch: str = "top"
    ):
        self.heads = heads.eval()
        self.tree = None if tree is None else TreeShape.parse(tree)
        check_branch(branch)
        if self.tree is not None and self.tree.depth > heads.num_heads:
            raise ValueError(f"tree {self.tree} is {self.tree.depth} deep but there are only {heads.num_heads} heads")
        self.branch = branch
        self.window = check_window(heads.num_heads) if self.tree is None else self.tree.depth
        self.sampling = sampling

    per_sample = ("_tokens", "_q")

    @property
    def nodes(self) -> int:
        return self.window if self.tree is None else self.tree.nodes

    def _draft(self, state, hidden: torch.Tensor) -> None:
        logits = self.heads(hidden.to(next(self.heads.parameters()).dtype)).float()
        self._q = target_probs(logits, self.sampling or state.sampling)
        if self.tree is None:
            self._tokens = sample(self._q, state.rng.uniform(self.window))

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


def distill_heads(
    model: TokenModel,
    heads: DraftHeads,
    batches: Iterable[torch.Tensor],
    lr: float = 1e-3,
    temperature: float = 1.0,
) -> list[float]:
    """Train ``heads`` to match the frozen target's own next-token distributions (KL, teacher forcing).

    ``batches`` yields token sequences ``[B, T]`` the target is run on from position 0 (for conditional models,
    include the conditioning tokens). Head ``k`` at position ``t`` learns the target's distribution at
    ``t + 1 + k``, i.e. of token ``t + 2 + k``. Returns the loss of each batch.
    """
    optimiser = torch.optim.AdamW(heads.parameters(), lr=lr)
    heads.train()
    losses = []
    for tokens in batches:
        tokens = tokens.to(model.device)
        b, t = tokens.shape
        k = heads.num_heads
        if t < k + 2:
            raise ValueError(f"training sequences need at least num_heads + 2 = {k + 2} tokens, got {t}")
        with torch.no_grad():
            cache = model.new_cache(b, t)
            positions = torch.arange(t, device=tokens.device).expand(b, t)
            out = model.forward(tokens, positions, cache, output_hidden=True)
            teacher = (out.logits / temperature).log_softmax(-1)
        student = (heads(out.hidden.float()) / temperature).log_softmax(-1)  # [B, T, K, V]
        loss = 0.0
        for j in range(k):  # a handful of heads, not a per-token loop
            span = t - 1 - j
            target = teacher[:, 1 + j : 1 + j + span]
            pred = student[:, :span, j]
            loss = loss + nn.functional.kl_div(pred, target, log_target=True, reduction="batchmean") / span
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    heads.eval()
    return losses
