"""Cost-aware windows (``window="auto"``): run the window that commits the most tokens per second here.

A verify forward of ``L + 1`` tokens costs ``t(L+1)``; it commits on average ``T(L)`` tokens. Plain AR commits one
token per ``t(1)``. So window ``L`` pays only where ``T(L) / t(L+1) > 1 / t(1)``, and the best window maximises
``T(L) / (t(L+1) / t(1))``. The cost ratios are measured once per model, device and batch size on the model at hand
(:func:`measure_costs`); ``T(L)`` is measured where the decoder runs (:class:`AutoWindow`). ``L = 0`` (plain AR,
cost 1, one token) is a candidate too, so the decoder shrinks to AR when no window pays.

Both are kept on disk under :func:`calibration_dir` (``$MMACCEL_CACHE/windows``, atomic JSON files), keyed by
what they depend on: the cost table by the weights (:func:`model_fingerprint`), the device, its threads, the
batch size and whether the forward is compiled; the measured ``T(L)`` also by the drafter and the rule. A second
process then neither calibrates nor explores again. ``MMACCEL_WINDOW_CACHE=0`` (or ``AutoWindow(persist=False)``)
keeps both in memory only.

A window chosen from timings depends on the machine and on the whole batch's acceptance: with ``window="auto"``
a sample is no longer the same alone and in a batch, nor from run to run, though each lossless method still
samples from AR's distribution. Pass a fixed window, or fixed ``costs``, for reproducible tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .acceptance.neighbours import cache_root
from .io import write_json_atomic

#: The windows ``auto`` chooses among (besides 0, plain AR).
CANDIDATES: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)
#: Set to 0 / off / false / no to keep calibrations in memory only.
CACHE_ENV = "MMACCEL_WINDOW_CACHE"
_VERSION = 3  # bump when what a file holds changes meaning: older files are then ignored
_MEASURED: dict[tuple, dict[int, float]] = {}
#: Per (model, device, batch, drafter, rule): window -> [tokens committed, row-steps, seconds, steps, forward
#: seconds] measured at it.
_LEARNED: dict[object, dict[int, list[float]]] = {}
#: Per key: [tokens, row-steps] over every window step of the generations seen, then over their measured
#: intervals, then how many generations in a row started in plain AR.
_WHOLE: dict[object, list[float]] = {}
#: Per key: window a generation started at -> [generations, their summed tokens per second per sample], over the
#: generations that started from something measured (the cold one explores, whatever it starts at).
_STARTS: dict[object, dict[int, list[float]]] = {}
#: Generations a start window's record keeps: older ones are scaled down past it.
START_MEMORY = 8.0
_FINGERPRINTS: dict[int, tuple[torch.nn.Module, str]] = {}


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
    the wrappers' classes and the innermost model's identity (in this process; see :func:`model_fingerprint`)."""
    chain, inner = _unwrap(model)
    return (*chain, id(inner))


def _unwrap(model) -> tuple[list[str], object]:
    chain = [type(model).__name__]
    while hasattr(model, "model") and not isinstance(model.model, torch.nn.Module):
        model = model.model
        chain.append(type(model).__name__)
    return chain, getattr(model, "model", model)


def model_fingerprint(model) -> str:
    """A name for the weights that holds across processes: the wrappers' classes, the module's class, its
    parameter count and a digest of every parameter's name, shape, dtype and first values (cheap, unlike hashing
    all the bytes, and a different checkpoint of the same architecture differs in its first values)."""
    chain, inner = _unwrap(model)
    if not isinstance(inner, torch.nn.Module):
        return "/".join(chain)
    known = _FINGERPRINTS.get(id(inner))
    if known is None or known[0] is not inner:
        digest, count = hashlib.sha256(), 0
        with torch.no_grad():
            for name, p in inner.named_parameters():
                count += p.numel()
                head = p.detach().reshape(-1)[:16].float().cpu()
                digest.update(f"{name}{tuple(p.shape)}{p.dtype}".encode() + head.numpy().tobytes())
        known = _FINGERPRINTS[id(inner)] = (inner, f"{type(inner).__name__}:{count}:{digest.hexdigest()[:16]}")
    return "/".join([*chain[:-1], known[1]]) if len(chain) > 1 else known[1]


def device_name(device: torch.device) -> str:
    """The device as its costs depend on it: the accelerator's name, or the CPU's and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{platform.processor() or platform.machine()}:threads={torch.get_num_threads()}"


def calibration_key(model, device: torch.device, batch: int, compiled: bool = False) -> str:
    """The key of a cost table: weights, device, batch size and whether the step forward is compiled."""
    return f"{model_fingerprint(model)}|{device_name(device)}|batch={batch}|{'compiled' if compiled else 'eager'}"


def component_name(component) -> str:
    """A drafter or rule as its acceptance depends on it: its class, its scalar settings and the classes of its
    helper objects (a Jacobi init), the window aside, which ``auto`` itself moves."""
    settings: dict[str, object] = {}
    for k, v in sorted(vars(component).items()):
        if k.startswith("_") or k == "window" or v is None:
            continue
        if isinstance(v, (bool, int, float, str)):
            settings[k] = v
        elif not isinstance(v, (torch.Tensor, torch.nn.Module, Mapping, Sequence, set)):
            settings[k] = type(v).__name__
    return type(component).__name__ + (json.dumps(settings, sort_keys=True) if settings else "")


def persistence_enabled() -> bool:
    """Whether calibrations go to disk (``$MMACCEL_WINDOW_CACHE`` not 0 / off / false / no)."""
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in {"0", "off", "false", "no"}


def calibration_dir() -> Path:
    """Where cost tables and measured acceptance live: ``cache_root() / "windows"``."""
    return cache_root() / "windows"


def _path(kind: str, key: str) -> Path:
    return calibration_dir() / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _load(kind: str, key: str) -> dict | None:
    """The stored record for ``key``, or None when missing, damaged, of another version or another key."""
    try:
        record = json.loads(_path(kind, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != _VERSION or record.get("key") != key:
        return None
    return record


def _store(kind: str, key: str, **data) -> None:
    try:
        calibration_dir().mkdir(parents=True, exist_ok=True)
        write_json_atomic(_path(kind, key), {"version": _VERSION, "key": key, **data})
    except OSError:
        pass  # a read-only cache costs a calibration next time, nothing else


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock times it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stored_costs(key: str, windows: Sequence[int]) -> dict[int, float] | None:
    record = _load("costs", key)
    if record is None:
        return None
    try:
        costs = {int(w): float(c) for w, c in record["costs"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not set(windows) <= costs.keys() or not all(c > 0 and math.isfinite(c) for c in costs.values()):
        return None
    return costs


def anchor_windows(windows: Sequence[int]) -> list[int]:
    """The windows a calibration times (0, the narrowest, the widest and the one nearest their geometric mean);
    the others are interpolated (:func:`interpolate`). A verify's cost is close to affine in its length between
    those (``CANDIDATES`` on the default image model, bench/engine_s4.json: within 3% of the measured ratios at
    batch 1, 7% at batch 10), and timing four lengths instead of nine more than halves a cold start's
    calibration; :class:`AutoWindow` then times the steps it runs."""
    ordered = sorted(set(windows))
    middle = min(ordered, key=lambda w: (abs(math.log(w / math.sqrt(ordered[0] * ordered[-1]))), w))
    return sorted({0, ordered[0], middle, ordered[-1]})


def interpolate(costs: Mapping[int, float], window: int) -> float:
    """``costs`` at ``window``: the value where timed, else linear between the nearest timed windows around it."""
    if window in costs:
        return costs[window]
    below = max(w for w in costs if w < window)
    above = min(w for w in costs if w > window)
    share = (window - below) / (above - below)
    return costs[below] + share * (costs[above] - costs[below])


@torch.no_grad()
def measure_costs(
    model, cache, state, windows: Sequence[int], repeats: int = 3, forward=None, persist: str | None = None
) -> dict[int, float]:
    """``t(L+1) / t(1)`` for each window on ``model`` at this batch's size, measured on its own ``cache`` at the
    committed frontier (the slots written are rewritten by the next step before any query reads them), and kept
    per model, device and batch size for the process; four lengths are timed, the rest interpolated
    (:func:`anchor_windows`). ``forward`` is the step forward the decoder will run
    (default ``model.forward``; the compiled one when compiling, whose costs differ). ``persist`` (a
    :func:`calibration_key`) also keeps the table on disk, where a later process finds it."""
    compiled = forward is not None  # a bound method is a new object each access: `is` cannot compare them
    forward = forward or model.forward
    key = (persist or model_key(model), str(state.device), state.batch_size, tuple(windows), compiled)
    if key in _MEASURED:
        return _MEASURED[key]
    stored = _stored_costs(persist, windows) if persist and persistence_enabled() else None
    if stored is not None:
        _MEASURED[key] = stored
        return stored
    lengths = anchor_windows(windows)
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
    timed = {length: statistics.median(t) / base for length, t in times.items()}
    _MEASURED[key] = {length: interpolate(timed, length) for length in sorted({0, *windows})}
    if persist and persistence_enabled():
        _store("costs", persist, costs={str(w): c for w, c in _MEASURED[key].items()})
    return _MEASURED[key]


def learned(key, disk: bool = True) -> dict[int, list[float]]:
    """What ``auto`` measured so far under ``key``: window -> [tokens committed, row-steps, seconds, steps, forward
    seconds] (seconds 0 where the steps, or their forwards, were not timed). A string key (a
    :func:`calibration_key` plus drafter and rule) is read from disk the first time, with ``disk`` and persistence
    on."""
    if key not in _LEARNED:
        table: dict[int, list[float]] = {}
        whole = [0.0] * 5
        starts: dict[int, list[float]] = {}
        record = _load("rates", key) if disk and isinstance(key, str) and persistence_enabled() else None
        if record is not None:
            try:
                table = {int(w): [float(x) for x in v] for w, v in record["observed"].items()}
                table = {w: v for w, v in table.items() if len(v) == 5 and v[1] > 0 and min(v) >= 0}
                stored = [float(x) for x in record.get("whole", whole)]
                whole = stored if len(stored) == 5 and min(stored) >= 0 else whole
                starts = {int(w): [float(x) for x in v] for w, v in record.get("starts", {}).items()}
                starts = {w: v for w, v in starts.items() if len(v) == 2 and v[0] > 0 and v[1] >= 0}
            except (KeyError, TypeError, ValueError, AttributeError):
                table, starts = {}, {}
        _LEARNED[key] = table
        _WHOLE[key] = whole
        _STARTS[key] = starts
    return _LEARNED[key]


def _whole(key, disk: bool = True) -> list[float]:
    """The whole-generation tallies under ``key`` (see :class:`AutoWindow`), read with :func:`learned`."""
    learned(key, disk)
    return _WHOLE[key]


def _starts(key, disk: bool = True) -> dict[int, list[float]]:
    """What the generations under ``key`` gave, by the window they started at (see :class:`AutoWindow`)."""
    learned(key, disk)
    return _STARTS[key]


#: Row-steps a window's record keeps: older evidence is scaled down past it.
MEMORY = 4096.0


class ForwardTimer:
    """Seconds spent in the step forwards between two :meth:`read` calls, with no host sync per step: the host
    clock on the CPU (whose ops run synchronously), CUDA events on a GPU (read at the interval's one sync)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self._seconds = 0.0
        self._events: list = []

    def __enter__(self) -> ForwardTimer:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._events.append([start, None])
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events[-1][1] = end
        else:
            self._seconds += time.perf_counter() - self._start

    def read(self) -> float:
        """The forwards' seconds since the last read (waits for the last recorded one on a GPU)."""
        if self.cuda:
            if self._events:
                self._events[-1][1].synchronize()
            seconds = sum(a.elapsed_time(b) for a, b in self._events) / 1e3
            self._events = []
            return seconds
        seconds, self._seconds = self._seconds, 0.0
        return seconds


@dataclass
class AutoWindow:
    """Chooses the window every ``interval`` steps: the one that commits the most tokens per second, ``T(L) /
    S(L)``, from the tokens per step ``T(L)`` and the seconds per step ``S(L)`` measured so far.

    ``S(L)`` is the whole step (drafting, verify forward, rule, commit), timed over each interval; where it has
    not been timed, it is the nearest timed window's scaled by the cost table (``t(L+1) / t(1)``, see
    :func:`measure_costs`), and before anything is timed the cost table itself (plain AR costs 1). Plain AR's step,
    until timed, is the narrowest timed window's *forward* (a :class:`ForwardTimer` the decoder runs) scaled by the
    table: a window's drafting and rule cost time a step that AR never pays, and scaling the whole step would
    charge AR for them. AR's own sampling and commit are left out of it, which errs towards AR. With a fixed
    ``costs`` table nothing is timed: the table is taken as the truth, so the choices are reproducible.

    ``T(L)`` is the tokens committed per row forwarded: a finished sample still in the batch (until it retires)
    costs its row and commits nothing, which plain AR, whose samples all finish together, never pays. It is
    measured, never modelled from an acceptance rate: Jacobi windows do not accept geometrically
    (their long runs come from regions that converged over many iterations, which a short window never gets).
    A window not measured yet is credited optimistically from those that were (``T`` grows with the window and
    flattens: at most ``T(M)`` for a wider measured ``M``, at most ``1 + (T(M) - 1) L / M`` for a narrower one),
    so it is tried only where it could beat the best measured one; before anything is measured, from a
    truncated-geometric ``prior`` acceptance. A measured ``T(L)`` is credited ``1 + bonus * sqrt(log(1 + N) / n)``
    times its mean, UCB1's confidence radius, with ``n`` the row-steps measured at ``L`` and ``N`` those at all
    windows: it fades as evidence at ``L`` grows and grows while ``L`` is left alone, so an unlucky interval does
    not bar a window for good. The decoder moves to another window only when its rate beats the current one by
    ``margin``; once at plain AR it stays there to the end of the generation (the drafter has not followed the AR
    steps), timing them for the next.

    What a window costs beyond its measured intervals (the unmeasured lead-in, where drafts accept least, and the
    last steps, when a batch waits for its slowest sample) is measured too: every generation's tokens per row over
    all its window steps against those of its measured intervals. That ratio (at most 1, pooled over the
    generations seen) discounts every window's rate against plain AR's, which has neither, so a window is run only
    where it beats AR over a whole generation.

    What is measured carries over: to the next generation with the same model, device, batch size, drafter and
    rule, and (on disk, see the module) to the next process. A generation starts from what is known to pay: the
    window with the best *lower* confidence bound (the measured mean times ``1 - radius``; 1 token for a window
    not measured yet), plain AR where none beats it. Exploring costs a whole generation's lead-in and its window
    changes, so where the windows' edge over AR is inside the noise (batch 10 on this CPU), AR stays; before
    anything is measured the first generation starts from the prior. After 2, 4, 8, ... generations in a row
    that started in AR, one starts from the upper bounds and explores again.
    A window is not started from once the generations that started there committed fewer tokens per second, from
    the prefill to the last sample, than those that ran plain AR (:meth:`lost`): the estimates come from the middle
    of generations, and on a batch where windows barely pay (batch 10 on this CPU) they recommended starts that
    lost to AR over the whole generation.

    Not measured: the first ``lead_in`` of a generation's tokens (an image's first tokens accept far less than
    the rest whatever the window, so judging windows there would favour the narrow ones), and the interval
    after each change (a Jacobi window needs a few iterations to converge again). ``start`` fixes the first
    window; ``persist=False`` keeps everything in memory.
    """

    costs: Mapping[int, float] | None = None
    windows: Sequence[int] = CANDIDATES
    interval: int = 8
    prior: float = 0.7
    start: int | None = None
    lead_in: float = 0.15
    bonus: float = 0.5
    margin: float = 0.03
    persist: bool = True
    observed: dict[int, list[float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.windows or min(self.windows) < 1:
            raise ValueError(f"windows must be integers >= 1, got {list(self.windows)}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.start is not None and self.start not in self.windows:
            raise ValueError(f"start must be one of windows {list(self.windows)}, got {self.start}")
        if not 0 <= self.lead_in < 1:
            raise ValueError(f"lead_in must be in [0, 1), got {self.lead_in}")
        self._pending: list = []
        self._pending_rows = 0  # rows forwarded over the pending steps
        self._key = None
        self._clock: float | None = None
        self.timer: ForwardTimer | None = None
        self.whole: list[float] = [0.0] * 5
        self._generation: list[float] = [0.0, 0.0, 0.0, 0.0]
        self._pending_window = 0
        self.starts: dict[int, list[float]] = {}
        self._first: int | None = None
        self._length = 0
        self._began = 0.0

    @property
    def max_window(self) -> int:
        return max(self.windows)

    def begin(
        self, costs: Mapping[int, float], key=None, length: int | None = None, timer: ForwardTimer | None = None
    ) -> int:
        """Start a generation of ``length`` tokens per sample with these cost ratios; returns the first window.
        ``key`` names the model, device, batch size, drafter and rule: what was measured under it is the start.
        ``timer`` times the decoder's step forwards (read once per interval)."""
        self.table = {0: 1.0, **{w: costs[w] for w in sorted(self.windows) if w in costs}}
        self._pending, self._pending_rows, self._key = [], 0, key
        self.observed = learned(key, self.persist) if key is not None else {}
        self.whole = _whole(key, self.persist) if key is not None else [0.0] * 5
        self.starts = _starts(key, self.persist) if key is not None else {}
        self._generation = [0.0, 0.0, 0.0, 0.0]  # tokens and row-steps: all window steps, then measured ones
        self._pending_window = 0
        self.timer = timer
        self._warmup = 2  # intervals: a generation's first drafts are its initialisation, nothing converged yet
        self._lead_in = self.lead_in * length if length else 0.0  # tokens per sample before anything is measured
        self._progress = 0.0
        self._clock = None
        self._length = length or 0
        self._began = time.perf_counter()
        cold = not any(w for w in self.observed)
        # None: nothing recorded, for a cold start (it explores, whatever it starts at) and a fixed table (nothing
        # timed: the choices must follow from the table alone)
        self._first = None if self.costs is not None or cold else 0
        if self.start is not None:
            return self._started(self.start)
        first = self.best({w: r for w, r in self.rates(optimistic=False).items() if not self.lost(w)})
        if first or cold:
            self.whole[4] = 0
            return self._started(first)
        # Plain AR by the lower bounds. After 2, 4, 8, ... such generations in a row one starts from the upper
        # bounds instead: a few unlucky intervals must not keep the windows out for good (AR measures nothing
        # about them), and the doubling keeps what exploring costs to a vanishing share of the generations (not
        # after 1: the generation that has just found AR best would be second-guessed at once).
        streak = int(self.whole[4])
        self.whole[4] += 1
        return self._started(self.best() if streak >= 2 and streak & (streak - 1) == 0 else 0)

    def _started(self, window: int) -> int:
        if self._first is not None:
            self._first = window
        return window

    def lost(self, window: int) -> bool:
        """Whether the generations that started at ``window`` committed fewer tokens per second, whole, than
        those that ran plain AR: the interval estimates are read off the steady middle of a generation, and a
        start they recommend must also have paid from the prefill to the last sample."""
        if self.costs is not None or not window or window not in self.starts or 0 not in self.starts:
            return False
        mean = {w: v[1] / v[0] for w, v in self.starts.items()}
        return mean[window] < mean[0]

    def estimate(self, window: int, optimistic: bool = True) -> float:
        """The tokens per step ``T(window)`` credited to ``window`` (see the class); ``optimistic=False`` gives
        the lower confidence bound a generation starts from (1 token for a window not measured yet)."""
        if window == 0:
            return 1.0
        # UCB1's confidence radius: a window measured over few of the row-steps seen so far is credited more,
        # and one left alone is credited more as the others accrue evidence, until it is tried again. A radius
        # that only shrank let one unlucky interval bar a window (and every wider one, whose bounds it sets) for
        # good. The bounds below use the raw means: bonused ones made every unmeasured window worth a try.
        measured = {w: v[0] / v[1] for w, v in self.observed.items() if w and v[1] > 0}
        if window in measured:
            total = math.log1p(sum(v[1] for v in self.observed.values()))
            radius = self.bonus * math.sqrt(total / self.observed[window][1])
            return measured[window] * (1 + radius if optimistic else max(0.0, 1 - radius))
        if not measured:
            return expected_committed(self.prior, window)
        if not optimistic:
            return 1.0
        bound = window + 1.0
        for w, t in measured.items():
            bound = min(bound, t if w > window else 1 + (t - 1) * window / w)
        return bound

    def seconds(self, window: int) -> float:
        """The time of one step at ``window`` (see the class), in seconds where something was timed, else in
        units of ``t(1)``."""
        timed = {w: v[2] / v[3] for w, v in self.observed.items() if v[3] > 0 and v[2] > 0 and w in self.table}
        if not timed or self.costs is not None:
            return self.table[window]
        if window in timed:
            return timed[window]
        forwards = {w: v[4] / v[3] for w, v in self.observed.items() if w and v[3] > 0 and v[4] > 0 and w in timed}
        if window == 0 and forwards:  # AR's step is its forward: the narrowest window's, scaled down
            near = min(forwards, key=lambda w: (self.table[w], w))
            return forwards[near] / self.table[near]
        near = min(timed, key=lambda w: (abs(math.log(self.table[w] / self.table[window])), w))
        return timed[near] * self.table[window] / self.table[near]

    def discount(self) -> float:
        """A window's whole-generation tokens per row over those of its measured intervals, at most 1 (see the
        class); 1 until a generation has ended."""
        tokens, rows, judged_tokens, judged_rows = self.whole[:4]
        if not (rows and judged_rows and judged_tokens):
            return 1.0
        return min(1.0, (tokens / rows) / (judged_tokens / judged_rows))

    def rates(self, optimistic: bool = True) -> dict[int, float]:
        """Credited tokens per unit of time, per window (0: plain AR); every window's is discounted by
        :meth:`discount`, which leaves their order alone and weighs them against AR. ``optimistic``: the upper
        confidence bounds that explore within a generation, else the lower ones a generation starts from."""
        discount = self.discount()
        return {w: self.estimate(w, optimistic) / self.seconds(w) * (discount if w else 1.0) for w in self.table}

    def best(self, rates: Mapping[int, float] | None = None) -> int:
        """The window with the highest credited rate (ties: the smaller), of ``rates`` (default :meth:`rates`)."""
        rates = self.rates() if rates is None else rates
        return max(sorted(rates), key=lambda w: rates[w])

    def observe(self, window: int, accepted: torch.Tensor, running: torch.Tensor) -> None:
        """One step at ``window``: each running sample's accepted drafts, ``running`` over every row the step
        forwarded (kept as tensors: no host sync here)."""
        running = running.to(accepted.dtype)
        self._pending.append(torch.stack([(accepted * running).sum(), running.sum()]))  # rows may retire: sums
        self._pending_rows += running.numel()  # known on the host: no tensor a step for it
        self._pending_window = window

    def choose(self, window: int) -> int:
        """The next window, given what the last ``interval`` steps committed (one host sync per interval)."""
        if len(self._pending) < self.interval:
            return window
        pending, self._pending = self._pending, []
        kept, live = torch.stack(pending).sum(0).tolist()  # the host sync: the interval's work is done
        steps, self._pending_rows = self._pending_rows, 0
        forward = self.timer.read() if self.timer is not None else 0.0
        now = time.perf_counter()
        elapsed = None if self._clock is None else now - self._clock
        self._clock = now
        if not live:
            return window
        tokens = kept + live  # drafts kept plus each step's own token, summed over running samples
        self._progress += tokens * len(pending) / live  # tokens per running sample
        if window:
            self._generation[0] += tokens
            self._generation[1] += steps
        if self._warmup or self._progress <= self._lead_in or elapsed is None:  # let the window converge first
            self._warmup = max(0, self._warmup - 1)
            return window
        if window:
            self._generation[2] += tokens
            self._generation[3] += steps
        seen = self.observed.setdefault(window, [0.0, 0.0, 0.0, 0.0, 0.0])
        timed = self.costs is None
        measured = (tokens, steps, elapsed, len(pending), forward) if timed else (tokens, steps, 0.0, 0.0, 0.0)
        for i, x in enumerate(measured):
            seen[i] += x
        if seen[1] > MEMORY:  # a bounded memory: later generations still move the estimate
            seen[:] = [x * MEMORY / seen[1] for x in seen]
        if window == 0:
            return 0  # the drafter has not followed the AR steps: AR to the end
        rates = self.rates()
        best = self.best(rates)
        # The margin keeps windows from trading places on noise; plain AR ends the generation's moves anyway.
        if best == window or (best and rates[best] <= rates[window] * (1 + self.margin)):
            return window
        self._warmup = 0 if best == 0 else 1
        return best

    def finish(self) -> None:
        """End a generation: its whole-generation tallies join the pooled ones (a generation that ran no measured
        window step adds nothing), and what it measured goes to disk under its key (string keys, when
        persisting)."""
        if self._pending:  # the last, partial interval: the end of the tail, counted in the whole generation
            kept, live = torch.stack(self._pending).sum(0).tolist()
            steps, self._pending, self._pending_rows = self._pending_rows, [], 0
            if self._pending_window:
                self._generation[0] += kept + live
                self._generation[1] += steps
        if self._generation[3]:
            for i, x in enumerate(self._generation):
                self.whole[i] += x
            if self.whole[1] > MEMORY:
                self.whole[:4] = [x * MEMORY / self.whole[1] for x in self.whole[:4]]
        seconds = time.perf_counter() - self._began
        if self._first is not None and self._length and seconds > 0:
            record = self.starts.setdefault(self._first, [0.0, 0.0])
            record[0] += 1
            record[1] += self._length / seconds
            if record[0] > START_MEMORY:
                record[:] = [x * START_MEMORY / record[0] for x in record]
        if self.persist and isinstance(self._key, str) and self.observed and persistence_enabled():
            observed = {str(w): v for w, v in sorted(self.observed.items())}
            _store("rates", self._key, observed=observed, whole=self.whole,
                   starts={str(w): v for w, v in sorted(self.starts.items())})
