"""The speculative loop: draft, verify in one forward, accept; batched, every sample at its own pace."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .acceptance import AcceptanceRule, make_rule, rule_class
from .drafting.base import Drafter
from .models.base import ModelOutput, TokenModel
from .sampling import SampleRNG, SamplingConfig, sample, target_probs
from .state import DecodeState, GenerationOutput, GenerationStats, scratch_length


@dataclass
class Step:
    """One verify forward's outcome per sample: the window's ``drafts`` ``[B, L]``, how many were ``accepted``
    ``[B]`` and the ``next_token`` ``[B]`` that ends the step, with the forward's output and its ``p``."""

    drafts: torch.Tensor
    accepted: torch.Tensor
    next_token: torch.Tensor
    out: ModelOutput
    p: torch.Tensor


def commit(state: DecodeState, step: Step, accept_step: torch.Tensor, forward_index: int) -> torch.Tensor:
    """Write ``drafts[:accepted]`` then ``next_token`` after each running sample's committed tokens; return how
    many tokens each sample committed (0 for finished samples, which write nothing)."""
    committed = torch.where(state.done, 0, step.accepted + 1)
    offsets = torch.arange(step.drafts.shape[1] + 1, device=state.device)
    new = torch.cat([step.drafts, step.next_token[:, None]], 1)
    new = new.scatter(1, step.accepted[:, None], step.next_token[:, None])
    # Clamping only keeps finished samples' indices in range; `keep` is False for all of them.
    index = (state.count[:, None] + offsets).clamp(max=state.generated.shape[1] - 1)
    keep = offsets < committed[:, None]
    state.generated.scatter_(1, index, torch.where(keep, new, state.generated.gather(1, index)))
    accept_step.scatter_(1, index, torch.where(keep, forward_index, accept_step.gather(1, index)))
    state.count += committed
    state.last_pos += committed
    state.stats.tokens_per_step.append(committed)
    return committed


class SpeculativeDecoder:
    """Generates tokens from ``model`` with any drafter and any acceptance rule, batched.

    ``drafter=None`` is plain AR sampling (one token per forward), the baseline every method is measured
    against. ``rule`` is a rule name (see :data:`mmaccel.acceptance.RULES`) or an :class:`AcceptanceRule`; a rule
    that reads a nearby-token table gets ``embeddings`` (default: the model's own table).
    """

    def __init__(
        self,
        model: TokenModel,
        drafter: Drafter | None = None,
        rule: str | AcceptanceRule = "exact",
        sampling: SamplingConfig | None = None,
        embeddings: torch.Tensor | None = None,
        **rule_params: Any,
    ):
        self.model = model
        self.drafter = drafter
        self.sampling = sampling or SamplingConfig()
        if isinstance(rule, str):
            if embeddings is None and rule_class(rule).table is not None:
                embeddings = model.embedding_table()
            rule = make_rule(rule, embeddings, **rule_params)
        elif rule_params:
            raise ValueError(f"rule parameters {sorted(rule_params)} given with an already built rule")
        table_size = getattr(rule, "vocab_size", model.vocab_size)
        if table_size != model.vocab_size:
            raise ValueError(
                f"embeddings has {table_size} rows but the model's vocabulary has {model.vocab_size} tokens"
            )
        self.rule = rule
        for what in ("model", "heads"):  # a draft model's or draft heads' vocabulary must be the target's
            owner = getattr(drafter, what, None)
            if owner is not None and owner.vocab_size != model.vocab_size:
                name = "draft model" if what == "model" else "heads"
                raise ValueError(
                    f"{name} vocabulary ({owner.vocab_size}) differs from the target's ({model.vocab_size})"
                )

    @property
    def window(self) -> int:
        return 0 if self.drafter is None else self.drafter.window

    def _prompt_span(self, prompt: Any) -> int:
        if hasattr(self.model, "max_prompt_length"):
            return self.model.max_prompt_length(prompt)
        return int(prompt.lengths.max())

    @torch.no_grad()
    def generate(
        self,
        prompt: Any,
        max_new_tokens: int,
        seeds: Sequence[int] | None = None,
        progress: bool = False,
    ) -> GenerationOutput:
        """Generate ``max_new_tokens`` tokens for every prompt row; ``seeds`` gives one seed per sample."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        batch = prompt.batch_size
        seeds = list(range(batch)) if seeds is None else list(seeds)
        if len(seeds) != batch:
            raise ValueError(f"seeds must hold one seed per sample ({batch}), got {len(seeds)}")
        device = self.model.device
        start = time.perf_counter()
        n = max_new_tokens
        stats = GenerationStats()
        slots = n + scratch_length(self.window)
        max_length = self._prompt_span(prompt) + slots
        cache = self.model.new_cache(batch, max_length)
        needs_hidden = self.drafter is not None and self.drafter.needs_hidden

        prefill = self.model.prefill(prompt, cache, output_hidden=needs_hidden)
        stats.nfe += 1
        rng = SampleRNG(seeds, device)
        generated = torch.zeros(batch, slots, dtype=torch.long, device=device)
        generated[:, 0] = sample(target_probs(prefill.logits[:, 0], self.sampling), rng.uniform(1)[:, 0])
        accept_step = torch.zeros_like(generated)
        state = DecodeState(
            prompt=prompt,
            sampling=self.sampling,
            rng=rng,
            vocab_size=self.model.vocab_size,
            max_length=max_length,
            generated=generated,
            count=torch.ones(batch, dtype=torch.long, device=device),
            last_pos=prompt.lengths.to(device).clone(),
            done=torch.zeros(batch, dtype=torch.bool, device=device),
            stats=stats,
        )
        state.done |= state.count >= n
        if self.drafter is not None:
            self.drafter.begin(state, prefill)

        bar = tqdm(total=n * batch, disable=not progress, desc="tokens", leave=False)
        bar.update(batch)
        while not bool(state.done.all()):
            forward_index = stats.nfe
            step = self._step(state, cache, needs_hidden)
            committed = commit(state, step, accept_step, forward_index)
            state.done |= state.count >= n
            if self.drafter is not None:
                self.drafter.update(state, step.out, step.p, step.accepted)
            if progress:
                bar.update(int(committed.clamp(max=n).sum()))
        bar.close()

        stats.accept_step = accept_step[:, :n]
        stats.steps_per_sample = stats.accept_step.max(1).values + 1
        stats.wall_s = time.perf_counter() - start
        return GenerationOutput(state.generated[:, :n].clone(), stats)

    def _step(self, state: DecodeState, cache, needs_hidden: bool) -> Step:
        """Draft, verify every draft in one forward, and let the rule decide: gpt-fast's speculative step."""
        w = self.window
        positions = state.last_pos[:, None] + torch.arange(w + 1, device=state.device)
        if self.drafter is None:  # plain AR: no drafts, the forward's own sample ends the step
            out = self.model.forward(state.last_token[:, None], positions, cache)
            state.stats.nfe += 1
            p = target_probs(out.logits, self.sampling)
            next_token = sample(p[:, 0], state.rng.uniform(1)[:, 0])
            no_drafts = next_token.new_empty(next_token.shape[0], 0)
            return Step(no_drafts, torch.zeros_like(next_token), next_token, out, p)
        draft = self.drafter.propose(state)
        tokens = torch.cat([state.last_token[:, None], draft.tokens], 1)
        out = self.model.forward(tokens, positions, cache, output_hidden=needs_hidden)
        state.stats.nfe += 1
        p = target_probs(out.logits, self.sampling)
        uniforms = state.rng.uniform(w + 1)
        verdict = self.rule(p, draft.q, draft.tokens, uniforms[:, :w], uniforms[:, w])
        return Step(draft.tokens, verdict.accepted, verdict.next_token, out, p)


__all__ = ["DecodeState", "GenerationOutput", "GenerationStats", "SampleRNG", "SpeculativeDecoder", "Step", "commit"]
