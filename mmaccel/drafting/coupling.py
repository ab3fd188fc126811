"""Couplings of consecutive Jacobi redrafts: draw a position's new draft from ``p_new`` so that it equals the
previous draft as often as possible, with the new draft's marginal still exactly ``p_new``.

Both functions are pure tensor functions over a batch of positions (``[..., V]`` distributions, ``[...]``
tokens), driven by the caller's uniforms, so a sample's draws never depend on the rest of the batch.

* :func:`maximal_coupling`: keep the old token ``x ~ q_old`` with probability ``min(1, p_new(x) / q_old(x))``,
  else draw from ``norm(max(p_new - q_old, 0))``. When ``x ~ q_old`` this is a maximal coupling of ``q_old`` and
  ``p_new``: ``P(new = old) = sum_v min(p_new(v), q_old(v))``, the most any coupling achieves, and the new token's
  marginal is ``min(p_new, q_old) + max(p_new - q_old, 0) = p_new``. It is speculative sampling's accept/residual
  step with the old draft as the "draft" and ``p_new`` as the "target".
* :func:`gumbel_max`: ``argmax(log p + g)`` with Gumbel noise ``g``; reusing the same ``g`` for every
  distribution a position is drawn from couples them (equal draws whenever the perturbed argmax agrees), and
  each draw, taken alone, is an exact sample of its own ``p``.
"""

from __future__ import annotations

import torch

from ..sampling import sample

#: The couplings :class:`~mmaccel.drafting.JacobiDrafter` accepts.
COUPLINGS: tuple[str, ...] = ("none", "maximal", "gumbel")


def check_coupling(coupling: str) -> str:
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {', '.join(map(repr, COUPLINGS))}, got {coupling!r}")
    return coupling


def _at(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def keep_probability(old: torch.Tensor, q_old: torch.Tensor, p_new: torch.Tensor) -> torch.Tensor:
    """``min(1, p_new(old) / q_old(old))``: how likely :func:`maximal_coupling` keeps ``old`` (1 where
    ``q_old(old) = 0 < p_new(old)``, 0 where both are 0)."""
    p, q = _at(p_new, old), _at(q_old, old)
    return torch.where(q > 0, (p / q.clamp(min=torch.finfo(q.dtype).tiny)).clamp(max=1), (p > 0).to(p.dtype))


def maximal_coupling(
    old: torch.Tensor,
    q_old: torch.Tensor,
    p_new: torch.Tensor,
    u_keep: torch.Tensor,
    u_draw: torch.Tensor,
) -> torch.Tensor:
    """A draw from ``p_new`` maximally coupled with ``old``, the token previously drawn from ``q_old``.

    ``old`` ``[...]``, ``q_old`` and ``p_new`` ``[..., V]`` (normalised), ``u_keep`` and ``u_draw`` ``[...]``
    uniforms in [0, 1). Keeps ``old`` when ``u_keep * q_old(old) < p_new(old)`` (probability
    ``min(1, p_new(old) / q_old(old))``), else draws from ``norm(max(p_new - q_old, 0))`` with ``u_draw``; an empty
    residual (``p_new <= q_old`` everywhere, i.e. equal up to rounding, where rejection has probability 0) falls
    back to ``p_new``. For a one-hot ``q_old`` the old token is kept with probability ``p_new(old)`` and the residual
    is ``p_new`` without it.
    """
    keep = u_keep.to(q_old.dtype) * _at(q_old, old) < _at(p_new, old)
    residual = (p_new - q_old).clamp_(min=0)
    empty = residual.sum(-1, keepdim=True) <= 0
    return torch.where(keep, old, sample(torch.where(empty, p_new, residual), u_draw))


def gumbel_noise(uniforms: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)`` from uniforms in [0, 1).

    ``u = 0`` (probability ``2**-24`` per float32 draw) is raised to the smallest normal float, so the noise is
    always finite: a ``-inf`` there would hide the only token of a one-hot ``p``.
    """
    return -torch.log(-torch.log(uniforms.clamp(min=torch.finfo(uniforms.dtype).tiny)))


def gumbel_max(p: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``argmax(log p + noise)`` over the last dimension: an exact sample of ``p`` for Gumbel ``noise``; tokens with
    ``p = 0`` are never chosen (unless every token's score is ``-inf``, which has probability 0)."""
    return (p.log() + noise).argmax(-1)


__all__ = ["COUPLINGS", "check_coupling", "gumbel_max", "gumbel_noise", "keep_probability", "maximal_coupling"]
