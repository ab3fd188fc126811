"""Acceptance maps: the colour bar legend runs from the first to the last colour, and lines outline exactly the
runs of tokens that one forward accepted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmaccel.image.acceptance_map import LINE, MIN_CELL_PX, acceptance_map, colourise

GRID = (4, 6)
CELL = 40  # 240 px for 6 columns: every cell is 40 x 40 pixels
# Tokens accepted per forward, in raster order: runs of 3, 1, 5 (wrapping a row), 1, 2, ... covering 24 cells.
RUNS = [3, 1, 5, 1, 2, 4, 1, 3, 4]
STEPS = torch.repeat_interleave(torch.arange(len(RUNS)), torch.tensor(RUNS))


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def _cell(pixels: np.ndarray, r: int, c: int) -> np.ndarray:
    return pixels[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL]


def test_the_legend_adds_a_strip_below_the_map():
    bare = acceptance_map(STEPS, GRID, size=240, legend=False)
    full = acceptance_map(STEPS, GRID, size=240)
    assert bare.size == (240, 160)
    assert full.width == bare.width and full.height > bare.height + 10
    assert np.array_equal(_pixels(full)[:160], _pixels(bare))


@pytest.mark.parametrize("max_step", [None, 24])
def test_the_colour_bar_runs_monotonically_from_the_first_to_the_last_colour(max_step):
    pixels = _pixels(acceptance_map(STEPS, GRID, size=240, max_step=max_step))[160:]
    first, last = colourise(np.array(0.0)), colourise(np.array(1.0))
    is_bar_row = [(row == first).all(-1).any() and (row == last).all(-1).any() for row in pixels]
    assert sum(is_bar_row) >= 5  # a bar several pixels high
    row = pixels[is_bar_row.index(True)]
    start = int(np.flatnonzero((row == first).all(-1))[0])
    end = int(np.flatnonzero((row == last).all(-1))[-1])
    assert end - start > 200  # nearly the map's width
    bar = row[start : end + 1]
    ramp = colourise(np.linspace(0, 1, 4001)).astype(int)
    assert np.abs(bar[:, None] - ramp[None]).max(-1).min(-1).max() <= 1  # every pixel is a colour of the scale
    assert bool((np.diff(bar[:, 1]) >= 0).all())  # and goes one way along it: viridis' green only rises
    # Labels at both ends: dark text pixels under the bar's two ends.
    below = pixels[max(i for i, b in enumerate(is_bar_row) if b) + 1 :]
    dark = below.sum(-1) < 200
    assert dark[:, start : start + 20].any() and dark[:, end - 20 : end + 1].any()


def test_cells_of_one_run_share_a_colour_and_runs_are_outlined():
    pixels = _pixels(acceptance_map(STEPS, GRID, size=240, max_step=len(RUNS)))
    steps = STEPS.view(GRID)
    for r in range(GRID[0]):
        for c in range(GRID[1]):
            cell = _cell(pixels, r, c)
            colour = colourise(np.array(float(steps[r, c]) / len(RUNS))).astype(int)
            assert (cell[1:, 1:] == colour).all()  # the inside: the run's colour, no line
            left = (cell[1:, 0] == LINE).all(-1)  # the first column: a line exactly where the run changes
            assert left.all() if c > 0 and steps[r, c] != steps[r, c - 1] else (cell[1:, 0] == colour).all()
            top = (cell[0, 1:] == LINE).all(-1)
            assert top.all() if r > 0 and steps[r, c] != steps[r - 1, c] else (cell[0, 1:] == colour).all()
    # The five-token run wraps a row: its three cells in row 0 and two in row 1 share one colour.
    assert len({tuple(_cell(pixels, r, c)[5, 5]) for r, c in [(0, 4), (0, 5), (1, 0), (1, 1)]}) == 1


def test_plain_ar_outlines_every_cell_and_a_wide_grid_widens_the_map():
    pixels = _pixels(acceptance_map(torch.arange(24), GRID, size=240, legend=False))
    for r in range(GRID[0]):
        for c in range(GRID[1]):
            cell = _cell(pixels, r, c)
            assert (cell[1:, 0] == LINE).all() == (c > 0) and (cell[0, 1:] == LINE).all() == (r > 0)
    wide = acceptance_map(torch.arange(8100), (90, 90), size=256, legend=False)
    assert wide.size == (90 * MIN_CELL_PX, 90 * MIN_CELL_PX)
    assert acceptance_map(torch.arange(8100), (90, 90), size=256, lines=False, legend=False).size == (256, 256)
