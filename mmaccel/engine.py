"""The speculative loop: draft, verify in one forward, accept; batched, every sample at its own pace."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .acceptance import AcceptanceRule, make_rule
from .drafting.base import Drafter
from .models.base import ModelOutput, TokenModel
from .sampling import SampleRNG, SamplingConfig, sample, target_probs


@dataclass
class GenerationStats:
    """What a generation cost and how its tokens were accepted."""

    nfe: int = 0  # target forward passes, the prompt's included
    draft_nfe: int = 0  # drafter model forward passes (draft model only)
    steps_per_sample: torch.Tensor | None = None  # [B] target forwards (prompt included) each sample needed
    tokens_per_step: list[torch.Tensor] = field(default_factory=list)  # per step: [B] tokens committed
    accept_step: torch.Tensor | None = None  # [B, N] the forward (0 = prompt) that committed each token
    wall_s: float = 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Mean tokens committed per target forward, over samples (AR gives 1)."""
        n = self.accept_step.shape[1]
        return float((n / self.steps_per_sample.float()).mean())

    def as_dict(self) -> dict[str, Any]:
        return {
            "nfe": self.nfe,
            "draft_nfe": self.draft_nfe,
            "steps_per_sample": self.steps_per_sample.tolist(),
            "mean_accepted_length": self.mean_accepted_length,
            "wall_s": self.wall_s,
        }


@dataclass
class GenerationOutput:
    tokens: torch.Tensor  # [B, N]
    stats: GenerationStats


@dataclass
class DecodeState:
    """Everything a drafter may read about the batch between steps."""

    prompt: Any
    sampling: SamplingConfig
    rng: SampleRNG
    vocab_size: int
    max_length: int  # cache slots
    generated: torch.Tensor  # [B, N + 2L + 2] committed tokens; the tail is scratch for drafters
    count: torch.Tensor  # [B] committed tokens
    last_pos: torch.Tensor  # [B] position of the last committed token (not yet forwarded)
    done: torch.Tensor  # [B]
    stats: GenerationStats

    @property
    def batch_size(self) -> int:
        return self.generated.shape[0]

    @property
    def device(self) -> torch.device:
        return self.generated.device

    @property
    def last_token(self) -> torch.Tensor:
        return self.generated.gather(1, (self.count - 1)[:, None]).squeeze(1)


class SpeculativeDecoder:
    """Generates tokens from ``model`` with any drafter and any acceptance rule, batched.

    ``drafter=None`` is plain AR sampling (one token per forward), the baseline every method is measured
    against. ``rule`` is a rule name (see :data:`mmaccel.acceptance.RULES`, plus ``lantern++``) or an
    :class:`AcceptanceRule`; rules that need nearby tokens get ``embeddings`` (default: the model's table).
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
            if embeddings is None and rule in ("lantern", "lantern++", "gsd"):
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
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        batch = prompt.batch_size
        seeds = list(range(batch)) if seeds is None else list(seeds)
        if len(seeds) != batch:
            raise ValueError(f"seeds must hold one seed per sample ({batch}), got {len(seeds)}")
        device = self.model.device
        start = time.perf_counter()
        n, w = max_new_tokens, self.window
        stats = GenerationStats()
        max_length = self._prompt_span(prompt) + n + 2 * w + 2
        cache = self.model.new_cache(batch, max_length)
        needs_hidden = self.drafter is not None and self.drafter.needs_hidden

        prefill = self.model.prefill(prompt, cache, output_hidden=needs_hidden)
        stats.nfe += 1
        rng = SampleRNG(seeds, device)
        first = sample(target_probs(prefill.logits[:, 0], self.sampling), rng.uniform(1)[:, 0])
        generated = torch.zeros(batch, n + 2 * w + 2, dtype=torch.long, device=device)
        generated[:, 0] = first
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
        ar = torch.arange(w + 1, device=device)
        while not bool(state.done.all()):
            step = stats.nfe
            accepted, next_token, out, p, drafts = self._step(state, cache, needs_hidden)
            committed = torch.where(state.done, 0, accepted + 1)
            # The step commits drafts[:accepted] followed by next_token.
            new = torch.cat([drafts, next_token[:, None]], 1).scatter(1, accepted[:, None], next_token[:, None])
            # Finished samples write nothing (keep is False); clamping only keeps their indices in range.
            index = (state.count[:, None] + ar).clamp(max=generated.shape[1] - 1)
            keep = ar < committed[:, None]
            state.generated.scatter_(1, index, torch.where(keep, new, state.generated.gather(1, index)))
            accept_step.scatter_(1, index, torch.where(keep, step, accept_step.gather(1, index)))
            state.count += committed
            state.last_pos += committed
            stats.tokens_per_step.append(committed)
            state.done |= state.count >= n
            if self.drafter is not None:
                self.drafter.update(state, out, p, accepted)
            bar.update(int(committed.clamp(max=n).sum()))
        bar.close()

        stats.accept_step = accept_step[:, :n]
        stats.steps_per_sample = stats.accept_step.max(1).values + 1
        stats.wall_s = time.perf_counter() - start
        return GenerationOutput(state.generated[:, :n].clone(), stats)

    def _step(self, state: DecodeState, cache, needs_hidden: bool):
        w = self.window
        positions = state.last_pos[:, None] + torch.arange(w + 1, device=state.device)
        if w == 0:
            out = self.model.forward(state.last_token[:, None], positions, cache)
            state.stats.nfe += 1
            p = target_probs(out.logits, self.sampling)
            next_token = sample(p[:, 0], state.rng.uniform(1)[:, 0])
            no_drafts = next_token.new_empty(next_token.shape[0], 0)
            return torch.zeros_like(next_token), next_token, out, p, no_drafts
        draft = self.drafter.propose(state)
        tokens = torch.cat([state.last_token[:, None], draft.tokens], 1)
        out: ModelOutput = self.model.forward(tokens, positions, cache, output_hidden=needs_hidden)
        state.stats.nfe += 1
        p = target_probs(out.logits, self.sampling)
        uniforms = state.rng.uniform(w + 1)
        verdict = self.rule(p, draft.q, draft.tokens, uniforms[:, :w], uniforms[:, w])
        return verdict.accepted, verdict.next_token, out, p, draft.tokens
