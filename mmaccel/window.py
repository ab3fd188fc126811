"""Cost-aware windows (``window="auto"``): run the window that commits the most tokens per second here.

A verify forward of ``L + 1`` tokens costs ``t(L+1)``; it commits on average ``E[L]`` tokens. Plain AR commits one
token per ``t(1)``. So window ``L`` pays only where ``E[L] / t(L+1) > 1 / t(1)``, and the best window maximises
``E[L] / (t(L+1) / t(1))``. The cost ratios are measured once per model, device and batch size on the model at hand
(:func:`measure_costs`); ``E[L]`` comes from what the decoder observes: the mean committed length at windows it
has run, and for the others a truncated-geometric extrapolation from the acceptance rate it saw,
``E[L] = (1 - a^(L+1)) / (1 - a)``. ``L = 0`` (plain AR, cost 1, one token) is always a candidate, so the decoder
shrinks to AR when no window pays.

A window chosen from timings depends on the machine and on the whole batch's acceptance: with ``window="auto"``
a sample is no longer the same alone and in a batch, nor from run to run, though each lossless method still
samples from AR's distribution. Pass a fixed window, or fixed ``costs``, for reproducible tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

#: The windows ``auto`` chooses among (besides 0, plain AR).
CANDIDATES: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)
_MEASURED: dict[tuple, dict[int, float]] = {}


def expected_committed(acceptance: float, window: int) -> float:
    """Mean tokens one step commits when each draft survives with probability ``acceptance`` (truncated geometric:
    accepted drafts plus the step's own token)."""
    if acceptance >= 1:
        return window + 1.0
    return (1 - acceptance ** (window + 1)) / (1 - acceptance)


def best_window(costs: Mapping[int, float], acceptance: float, observed: Mapping[int, float] | None = None) -> int:
    """The window with the most committed tokens per ``t(1)``: ``costs[L]`` is ``t(L+1) / t(1)`` (``costs[0]`` 1),
    ``observed[L]`` a measured mean committed length, which replaces the extrapolation where known. Ties go to the
    smaller window (less work for the same speed)."""
    observed = observed or {}
    rates = {}
    for window, ratio in costs.items():
        tokens = 1.0 if window == 0 else observed.get(window, expected_committed(acceptance, window))
        rates[window] = tokens / ratio
    return max(sorted(rates), key=lambda w: rates[w])


@torch.no_grad()
def measure_costs(model, cache, state, windows: Sequence[int], repeats: int = 3) -> dict[int, float]:
    """``t(L+1) / t(1)`` for each window on ``model`` at this batch's size, measured on its own ``cache`` at the
    committed frontier (the slots written are rewritten by the next step before any query reads them), and kept
    per model, device and batch size for the process."""
    key = (id(model), str(state.device), state.batch_size, tuple(windows))
    if key in _MEASURED:
        return _MEASURED[key]
    lengths = sorted({0, *windows})
    times: dict[int, list[float]] = {length: [] for length in lengths}
    for attempt in range(repeats + 1):  # the first round warms up every shape
        for length in lengths:
            tokens = state.last_token[:, None].expand(-1, length + 1)
            positions = state.last_pos[:, None] + torch.arange(length + 1, device=state.device)
            start = time.perf_counter()
            model.forward(tokens, positions, cache)
            if attempt:
                times[length].append(time.perf_counter() - start)
    base = statistics.median(times[0])
    _MEASURED[key] = {length: statistics.median(t) / base for length, t in times.items()}
    return _MEASURED[key]


@dataclass
class AutoWindow:
    """Chooses the window every ``interval`` steps from the observed acceptance and the verify costs.

    ``costs`` (``{L: t(L+1) / t(1)}``) fixes the cost table instead of measuring it (tests, reproducible runs);
    ``windows`` are the candidates, ``prior`` the acceptance rate assumed before anything is observed.
    """

    costs: Mapping[int, float] | None = None
    windows: Sequence[int] = CANDIDATES
    interval: int = 8
    prior: float = 0.6
    _sums: dict[int, list[float]] = field(default_factory=dict)
    _accepted: float = 0.0
    _trials: float = 0.0
    _pending: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.windows or min(self.windows) < 1:
            raise ValueError(f"windows must be integers >= 1, got {list(self.windows)}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")

    @property
    def max_window(self) -> int:
        return max(self.windows)

    def begin(self, costs: Mapping[int, float]) -> int:
        """Start a generation with these cost ratios; returns the first window."""
        self.table = {0: 1.0, **{w: costs[w] for w in self.windows if w in costs}}
        self._sums, self._accepted, self._trials, self._pending = {}, 0.0, 0.0, []
        return best_window(self.table, self.prior)

    def observe(self, window: int, accepted: torch.Tensor, running: torch.Tensor) -> None:
        """One step at ``window``: each running sample's accepted drafts (kept as tensors: no host sync here)."""
        self._pending.append((window, accepted, running))

    def choose(self, window: int) -> int:
        """The next window, given everything observed so far (one host sync per ``interval`` steps)."""
        if len(self._pending) < self.interval:
            return window
        for w, accepted, running in self._pending:
            n = float(running.sum())
            if not n:
                continue
            total = float((accepted * running).sum())
            stopped = float(((accepted < w) & running).sum())  # steps that ended on a rejected draft
            self._accepted += total
            self._trials += total + stopped
            tokens, steps = self._sums.setdefault(w, [0.0, 0.0])
            self._sums[w] = [tokens + total + n, steps + n]
        self._pending = []
        acceptance = self._accepted / self._trials if self._trials else self.prior
        observed = {w: tokens / steps for w, (tokens, steps) in self._sums.items() if steps}
        return best_window(self.table, acceptance, observed)
