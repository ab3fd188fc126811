"""Window schedules over a clip's frames: where each step's Jacobi window ends.

The core verifies a contiguous window of drafts after the committed prefix, in raster order, and may change
the window's length between steps (the hook :class:`~mmaccel.window.AutoWindow` uses: ``begin`` / ``observe``
/ ``choose``, the engine then calls the drafter's ``resize``). A schedule is such a controller that sets the
length from where the prefix stands in the clip instead of from measured rates:

* ``frame`` / ``row``: the window ends on the next frame (or row) boundary, as Next-Block Prediction's blocks
  (Ren et al. 2025): a step drafts the rest of the current block, the whole block at a block start, and never
  past it (with ``window`` at least a block, each block is one draft). NBP decodes a block in parallel with
  attention inside it, which its model is trained for; here the model stays causal and the rule verifies the
  block's raster prefix, so only the block-aligned proposals carry over, not NBP's training.
* ``diagonal``: Diagonal Decoding's parallel group (Ye et al. 2025): the tokens on the next token's
  anti-diagonal of the frame, ``(h + k, w - k)``, are proposed together, so the window reaches from the next
  token to the lowest of them. The core commits a raster prefix only, so the tokens between them are drafted
  too, and a group member counts once everything before it in raster order is accepted (DiagD's out-of-order
  commits would need a non-causal verifier the core does not have).

With several clips in a batch the window is the longest any running clip asks for (one window per step).
A schedule changes only how many drafts each step verifies, never the rule, so lossless rules stay lossless.
"""

from __future__ import annotations

import torch

from mmaccel.drafting import JacobiDrafter

from .layout import VideoLayout

SCHEDULES = ("frame", "row", "diagonal")


class ScheduledJacobiDrafter(JacobiDrafter):
    """A :class:`~mmaccel.drafting.JacobiDrafter` that keeps the decode state, for its schedule to read."""

    def begin(self, state, prefill) -> None:
        self.state = state  # the engine compacts it in place when clips retire, so this stays current
        super().begin(state, prefill)


class FrameSchedule:
    """A window controller (the engine's ``auto_window`` hook) for schedule ``kind`` over ``layout``, at most
    ``max_window`` drafts a step."""

    def __init__(self, kind: str, layout: VideoLayout, max_window: int, drafter: ScheduledJacobiDrafter):
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        if isinstance(max_window, bool) or not isinstance(max_window, int) or max_window < 1:
            raise ValueError(f"the window of a schedule must be an integer >= 1, got {max_window!r}")
        self.kind = kind
        self.layout = layout
        self.drafter = drafter
        self.windows = (max_window,)
        self.costs = {max_window: 1.0}  # a schedule needs no cost table: the engine must not measure one

    @property
    def max_window(self) -> int:
        return self.windows[0]

    def lengths(self, count: torch.Tensor) -> torch.Tensor:
        """The window each clip asks for when ``count`` tokens are committed (the next draft is token ``count``)."""
        lay = self.layout
        p = count.clamp(max=lay.num_tokens - 1)
        if self.kind == "frame":
            reach = lay.frame_tokens - p % lay.frame_tokens
        elif self.kind == "row":
            reach = lay.width - p % lay.width
        else:
            _, h, w = lay.position(p)
            k = torch.minimum(lay.height - 1 - h, w)  # how far down-left the anti-diagonal runs in the frame
            reach = k * (lay.width - 1) + 1
        return reach.clamp(1, self.max_window)

    def current(self) -> int:
        state = self.drafter.state
        live = ~state.done
        if not bool(live.any()):
            return self.max_window
        return int(self.lengths(state.count[live]).max())

    # The engine's window hook.

    def begin(self, costs, key=None) -> int:
        return self.current()

    def observe(self, window: int, accepted: torch.Tensor, running: torch.Tensor) -> None:
        pass

    def choose(self, window: int) -> int:
        return self.current()


def schedule_decoder(decoder, kind: str, layout: VideoLayout):
    """``decoder`` (a Jacobi method's :class:`~mmaccel.engine.SpeculativeDecoder`) with schedule ``kind``."""
    old = decoder.drafter
    if not isinstance(old, JacobiDrafter):
        raise ValueError(f"schedule {kind!r} needs a Jacobi method (sjd, mc-sjd, gsd, lantern, ...)")
    if decoder.auto_window is not None:
        raise ValueError(f"schedule {kind!r} sets the window itself; it cannot be combined with window=auto")
    drafter = ScheduledJacobiDrafter(old.window, old.init, coupling=old.coupling)
    decoder.drafter = drafter
    decoder.auto_window = FrameSchedule(kind, layout, old.window, drafter)
    return decoder


def split_schedule(spec: str) -> tuple[str, str | None]:
    """``"mc-sjd:schedule=frame:window=64"`` -> ``("mc-sjd:window=64", "frame")``: the schedule is the video's
    own, not a parameter of the core's method table, so it leaves the spec before the core parses it."""
    parts = spec.split(":")
    kept, schedule = [parts[0]], None
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if key.strip() == "schedule":
            if schedule is not None:
                raise ValueError(f"method {spec!r}: schedule is given twice")
            schedule = value.strip()
            if schedule not in SCHEDULES:
                raise ValueError(f"method {spec!r}: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        else:
            kept.append(part)
    return ":".join(kept), schedule
