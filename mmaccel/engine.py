"""The speculative loop: draft, verify in one forward, accept; batched, every sample at its own pace."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .acceptance import AcceptanceRule, make_rule, rule_class
from .acceptance.tree import path_columns, verify_tree
from .drafting.base import Drafter
from .models.base import ModelOutput, TokenModel, reorder
from .sampling import SampleRNG, SamplingConfig, sample, target_probs
from .state import DecodeState, GenerationOutput, GenerationStats, scratch_length
from .tree import TreeLayout, along
from .window import AutoWindow, ForwardTimer, calibration_key, component_name, measure_costs


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
    return committed


class SpeculativeDecoder:
    """Generates tokens from ``model`` with any drafter and any acceptance rule, batched.

    ``drafter=None`` is plain AR sampling (one token per forward), the baseline every method is measured
    against. ``rule`` is a rule name (see :data:`mmaccel.acceptance.RULES`) or an :class:`AcceptanceRule`; a rule
    that reads a nearby-token table gets ``embeddings`` (default: the model's own table).

    Finished samples leave the batch once the running ones fall to ``retire_below`` of the rows forwarded (the
    cache, the drafter's and the model's per-sample state are compacted): a batch then costs what its running
    samples cost. ``retire_below=0`` keeps every row to the end. Tokens and statistics are the same either way.

    ``auto_window`` (:class:`~mmaccel.window.AutoWindow`) lets the decoder change the drafter's window as it
    goes, to the one that commits the most tokens per second on this model, device and batch, down to plain AR.

    ``compile=True`` runs the step forward (verify, or the AR step) under ``torch.compile`` with static shapes:
    the cache attends over its whole buffer, the buffers sit at fixed addresses, and the batch stays whole (no
    retirement), so each window length is one graph; on CUDA the mode is ``"reduce-overhead"`` (CUDA graphs).
    The prefill stays eager. Tokens are those of the eager path.
    """

    def __init__(
        self,
        model: TokenModel,
        drafter: Drafter | None = None,
        rule: str | AcceptanceRule = "exact",
        sampling: SamplingConfig | None = None,
        embeddings: torch.Tensor | None = None,
        retire_below: float = 0.75,
        auto_window: AutoWindow | None = None,
        compile: bool = False,
        **rule_params: Any,
    ):
        if auto_window is not None:
            if drafter is None:
                raise ValueError("window='auto' needs a drafter (plain AR has no window)")
            drafter.window = auto_window.max_window
        self.auto_window = auto_window
        if not 0 <= retire_below <= 1:
            raise ValueError(f"retire_below must be in [0, 1], got {retire_below}")
        self.compile = compile
        # A batch that shrinks would be a new graph (and new CUDA graphs) for every size it passes through.
        self.retire_below = 0.0 if compile else retire_below
        self.model = model
        self._forward = model.forward
        if compile:
            mode = "reduce-overhead" if model.device.type == "cuda" else None
            self._forward = torch.compile(model.forward, mode=mode, dynamic=False)
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
        """The drafts per step (with ``auto_window``, the most it may run)."""
        if self.auto_window is not None:
            return self.auto_window.max_window
        return 0 if self.drafter is None else self.drafter.window

    @property
    def verify_nodes(self) -> int:
        """The drafted tokens one verify forward may carry beside the last committed one: the window for a chain
        (the widest with ``auto_window``), the tree's nodes for a tree, 0 for plain AR. A ceiling's ``t(L+1)`` is
        timed at this ``L``."""
        return max(self.window, 0 if self.drafter is None else self.drafter.nodes)

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
        slots = n + scratch_length(self.verify_nodes)
        max_length = self._prompt_span(prompt) + slots
        cache = self.model.new_cache(batch, max_length)
        needs_hidden = self.drafter is not None and self.drafter.needs_hidden

        prefill = self.model.prefill(prompt, cache, output_hidden=needs_hidden)
        stats.nfe += 1
        if self.compile:
            cache.mark_static()
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
        window = self.window
        auto = self.auto_window
        if auto is not None:  # each generation starts from the widest window; the last one may have shrunk it
            self.drafter.window = window
        if self.drafter is not None:
            self.drafter.begin(state, prefill)
        learned = isinstance(auto, AutoWindow)  # other window hooks (schedules) take (costs, key) only
        timer = ForwardTimer(device) if learned and auto.costs is None else None
        if auto is not None:
            costs = auto.costs
            key = calibration_key(self.model, device, batch, self.compile) if learned else None
            if costs is None:
                measured = time.perf_counter()
                forward = self._forward if self.compile else None
                persist = key if learned and auto.persist else None
                costs = measure_costs(self.model, cache, state, auto.windows, forward=forward, persist=persist)
                stats.calibration_s = time.perf_counter() - measured
            if learned:  # what auto measured is kept per model, device, batch, drafter and rule
                parts = (key, component_name(self.drafter), component_name(self.rule))
                key = None if auto.costs is not None else "|".join(parts)
                first = auto.begin(costs, key, length=n, timer=timer)
            else:
                first = auto.begin(costs, None)
            window = self._resize(state, window, first)

        bar = tqdm(total=n * batch, disable=not progress, desc="tokens", leave=False)
        bar.update(batch)
        rows = torch.arange(batch, device=device)  # the original sample of each row still forwarded
        tokens = torch.zeros(batch, n, dtype=torch.long, device=device)
        steps = torch.zeros(batch, n, dtype=torch.long, device=device)
        running = int((~state.done).sum())  # the one host sync of a step
        while running:
            forward_index = stats.nfe
            live = ~state.done if auto is not None else None
            step = self._step(state, cache, needs_hidden, window, timer)
            committed = commit(state, step, accept_step, forward_index)
            if len(rows) < batch:  # per step, the whole batch's counts: retired samples committed nothing
                committed = torch.zeros_like(tokens[:, 0]).index_copy(0, rows, committed)
            stats.tokens_per_step.append(committed)
            stats.windows.append(window)
            state.done |= state.count >= n
            if window:
                self.drafter.update(state, step.out, step.p, step.accepted)
            if auto is not None and (window or learned):  # AutoWindow also times the AR steps, for the next run
                auto.observe(window, step.accepted, live)
                window = self._resize(state, window, auto.choose(window))
            if progress:
                bar.update(int(committed.clamp(max=n).sum()))
            running = int((~state.done).sum())
            if running < self.retire_below * len(rows) or not running:
                keep = (~state.done).nonzero().squeeze(1)
                gone = state.done.nonzero().squeeze(1)
                tokens.index_copy_(0, rows[gone], state.generated[gone, :n])
                steps.index_copy_(0, rows[gone], accept_step[gone, :n])
                if running:
                    rows, accept_step = rows[keep], accept_step[keep]
                    state.select(keep)
                    reorder(self.model, cache, keep)
                    if self.drafter is not None:
                        self.drafter.reorder(keep)
        bar.close()
        if learned:
            auto.finish()

        stats.accept_step = steps
        stats.steps_per_sample = steps.max(1).values + 1
        stats.wall_s = time.perf_counter() - start
        return GenerationOutput(tokens, stats)

    def _resize(self, state: DecodeState, window: int, new: int) -> int:
        """Move the drafter to window ``new`` (0: plain AR steps from now on, the drafter is left alone)."""
        if new and new != window:
            self.drafter.resize(state, new)
        return new

    def _step(self, state: DecodeState, cache, needs_hidden: bool, w: int, timer=None) -> Step:
        """Draft ``w`` tokens (a chain, or a tree ``w`` deep), verify them in one forward, and let the rule decide:
        gpt-fast's speculative step. ``timer`` (a context manager) brackets the forward."""
        timer = timer or nullcontext()
        positions = state.last_pos[:, None] + torch.arange(w + 1, device=state.device)
        if w == 0:  # plain AR: no drafts, the forward's own sample ends the step
            with timer:
                out = self._forward(state.last_token[:, None], positions, cache)
            state.stats.nfe += 1
            p = target_probs(out.logits, self.sampling)
            next_token = sample(p[:, 0], state.rng.uniform(1)[:, 0])
            no_drafts = next_token.new_empty(next_token.shape[0], 0)
            return Step(no_drafts, torch.zeros_like(next_token), next_token, out, p)
        draft = self.drafter.propose(state)
        tokens = torch.cat([state.last_token[:, None], draft.tokens], 1)
        n = draft.tokens.shape[1]
        tree = None if draft.parents is None else TreeLayout.full(draft.ancestors)
        if tree is not None:  # siblings share a position: a node sits at the last committed one plus its depth
            positions = state.last_pos[:, None] + torch.cat([torch.zeros_like(draft.depth[:, :1]), draft.depth], 1)
        with cache.tree_attention(tree), timer:
            out = self._forward(tokens, positions, cache, output_hidden=needs_hidden)
        state.stats.nfe += 1
        p = target_probs(out.logits, self.sampling)
        uniforms = state.rng.uniform(n + 1)
        if tree is None:
            verdict = self.rule(p, draft.q, draft.tokens, uniforms[:, :w], uniforms[:, w])
            return Step(draft.tokens, verdict.accepted, verdict.next_token, out, p)
        verdict = verify_tree(self.rule, p, draft.q, draft.tokens, draft.parents, w, uniforms[:, :n], uniforms[:, n])
        # From here on the step is the chain along the accepted path: its keys and values where a chain's go.
        columns = path_columns(verdict)
        cache.keep_path(columns)
        self.drafter.keep_path(columns)
        out = ModelOutput(along(out.logits, columns), None if out.hidden is None else along(out.hidden, columns))
        drafts = along(draft.tokens, verdict.path.clamp(min=0))
        return Step(drafts, verdict.accepted, verdict.next_token, out, along(p, columns))


__all__ = ["DecodeState", "GenerationOutput", "GenerationStats", "SampleRNG", "SpeculativeDecoder", "Step", "commit"]
