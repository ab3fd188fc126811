"""Cost-aware windows (``window="auto"``): run the window that commits the most tokens per second here.

A verify forward of ``L + 1`` tokens costs ``t(L+1)``; it commits on average ``E[L]`` tokens. Plain AR commits one
token per ``t(1)``. So window ``L`` pays only where ``E[L] / t(L+1) > 1 / t(1)``, and the best window maximises
``E[L] / (t(L+1) / t(1))``. The cost ratios are measured once per model, device and batch size on the model at hand
(:func:`measure_costs`); ``E[L]`` is measured where the decoder runs (:class:`AutoWindow`).
:func:`best_window` gives the best window for a truncated-geometric acceptance, ``E[L] = (1 - a^(L+1)) / (1 - a)``,
which suits drafters whose drafts survive independently (a draft model) better than Jacobi windows. ``L = 0``
(plain AR, cost 1, one token) is a candidate too, so the decoder shrinks to AR when no window pays.

A window chosen from timings depends on the machine and on the whole batch's acceptance: with ``window="auto"``
a sample is no longer the same alone and in a batch, nor from run to run, though each lossless method still
samples from AR's distribution. Pass a fixed window, or fixed ``costs``, for reproducible tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


def model_key(model) -> tuple:
    """What a verify costs depends on the weights, not on the wrapper objects a pipeline builds anew per call:
    the wrappers' classes and the innermost model's identity."""
    chain = [type(model).__name__]
    while hasattr(model, "model") and not isinstance(model.model, torch.nn.Module):
        model = model.model
        chain.append(type(model).__name__)
    return (*chain, id(getattr(model, "model", model)))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock times it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_costs(model, cache, state, windows: Sequence[int], repeats: int = 3, forward=None) -> dict[int, float]:
    """``t(L+1) / t(1)`` for each window on ``model`` at this batch's size, measured on its own ``cache`` at the
    committed frontier (the slots written are rewritten by the next step before any query reads them), and kept
    per model, device and batch size for the process. ``forward`` is the step forward the decoder will run
    (default ``model.forward``; the compiled one when compiling, whose costs differ)."""
    compiled = forward is not None  # a bound method is a new object each access: `is` cannot compare them
    forward = forward or model.forward
    key = (model_key(model), str(state.device), state.batch_size, tuple(windows), compiled)
    if key in _MEASURED:
        return _MEASURED[key]
    lengths = sorted({0, *windows})
    times: dict[int, list[float]] = {length: [] for length in lengths}
    for attempt in range(repeats + 1):  # the first round warms up every shape
        for length in lengths:
            # a token per row, or a frame of streams per row (codec LMs): the window repeats it
            tokens = state.last_token[:, None].expand(-1, length + 1, *state.last_token.shape[1:])
            positions = state.last_pos[:, None] + torch.arange(length + 1, device=state.device)
            synchronize(state.device)
            start = time.perf_counter()
            forward(tokens, positions, cache)
            synchronize(state.device)
            if attempt:
                times[length].append(time.perf_counter() - start)
    base = statistics.median(times[0])
    _MEASURED[key] = {length: statistics.median(t) / base for length, t in times.items()}
    return _MEASURED[key]


@dataclass
class AutoWindow:
    """Chooses the window every ``interval`` steps from the rate it measures, ``committed per step / (t(L+1) /
    t(1))``; plain AR's rate is exactly 1.

    It starts at the window the cost table favours for an optimistic acceptance rate ``prior`` (0.9 by default:
    the widest window that does not cost much more than narrower ones), or where the last generation of the
    same model, device and batch size settled. After each change it lets one interval pass (a Jacobi window
    needs a few iterations to converge again), then measures one interval. A window that pays (rate >= 1) is
    kept. One that does not is left for the widest smaller window that could still pay: a smaller window
    commits at most as many tokens per step, so a window whose cost ratio exceeds the tokens per step just
    measured cannot beat AR and is skipped. When none is left the decoder runs plain AR to the end.

    Why measured rates and not a model of acceptance: Jacobi windows do not accept geometrically (their long
    runs come from regions that converged over many iterations, which a short window never gets), and just
    after a change a window inherits drafts refined at another width, so extrapolating from one window to
    another misleads. ``costs`` (``{L: t(L+1) / t(1)}``) fixes the cost table instead of measuring it (tests,
    reproducible runs); ``start`` fixes the first window.
    """

    costs: Mapping[int, float] | None = None
    windows: Sequence[int] = CANDIDATES
    interval: int = 8
    prior: float = 0.9
    start: int | None = None

    def __post_init__(self) -> None:
        if not self.windows or min(self.windows) < 1:
            raise ValueError(f"windows must be integers >= 1, got {list(self.windows)}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.start is not None and self.start not in self.windows:
            raise ValueError(f"start must be one of windows {list(self.windows)}, got {self.start}")
        self._pending: list = []

    @property
    def max_window(self) -> int:
        return max(self.windows)

    def begin(self, costs: Mapping[int, float], key: tuple | None = None) -> int:
        """Start a generation with these cost ratios; returns the first window. ``key`` names the model, device
        and batch size, whose last settled window is the next start."""
        self.table = {0: 1.0, **{w: costs[w] for w in sorted(self.windows) if w in costs}}
        self._pending, self._key = [], key
        self._warmup = 2  # intervals: a generation's first drafts are its initialisation, nothing converged yet
        if self.start is not None:
            return self.start
        return _SETTLED.get(key, best_window(self.table, self.prior))

    def observe(self, window: int, accepted: torch.Tensor, running: torch.Tensor) -> None:
        """One step at ``window``: each running sample's accepted drafts (kept as tensors: no host sync here)."""
        running = running.to(accepted.dtype)
        self._pending.append(torch.stack([(accepted * running).sum(), running.sum()]))  # rows may retire: sums

    def choose(self, window: int) -> int:
        """The next window, given what the last ``interval`` steps committed (one host sync per interval)."""
        if len(self._pending) < self.interval:
            return window
        pending, self._pending = self._pending, []
        if self._warmup:  # after a start or a change, let the window converge before judging it
            self._warmup -= 1
            return window
        kept, steps = torch.stack(pending).sum(0).tolist()
        if not steps:
            return window
        per_step = (kept + steps) / steps  # drafts kept plus the step's own token
        if per_step >= self.table[window]:
            chosen = window  # it pays
        else:
            could = [w for w in self.table if 0 < w < window and self.table[w] <= per_step]
            chosen = max(could, default=0)
        if chosen != window:
            self._warmup = 1
        if self._key is not None:
            _SETTLED[self._key] = chosen if chosen else min(self.table.keys() - {0})
        return chosen


#: The window each (model, device, batch size) last settled on, where the next generation starts. After plain
#: AR the next one starts from the smallest window, so a generation whose early steps were unlucky does not
#: condemn every later one to AR.
_SETTLED: dict[tuple, int] = {}
