"""window="auto": the decoder runs the window its cost table and the observed acceptance say is best."""

import pytest
import torch

from mmaccel import DraftModelDrafter, JacobiDrafter, SamplingConfig, SpeculativeDecoder, TokenPrompt
from mmaccel.methods import build_decoder, parse_method
from mmaccel.window import AutoWindow, best_window, expected_committed

PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]


def test_expected_committed_is_the_truncated_geometric_mean():
    assert expected_committed(0.0, 8) == 1.0
    assert expected_committed(1.0, 8) == 9.0
    assert expected_committed(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


def test_best_window_maximises_tokens_per_unit_of_ar_time():
    costs = {0: 1.0, 1: 1.1, 2: 1.2, 4: 1.5, 8: 3.0, 16: 6.0}
    # acceptance 0.8: E = 1.8, 2.44, 3.36, 4.33, 4.9 tokens -> per cost 1.64, 2.03, 2.24, 1.44, 0.82
    assert best_window(costs, 0.8) == 4
    assert best_window(costs, 0.05) == 0  # nothing pays: plain AR
    assert best_window({0: 1.0, 2: 1.0, 4: 1.0}, 0.5) == 4  # free verification: the widest window
    assert best_window({0: 1.0, 2: 2.0, 4: 2.0}, 1.0) == 4  # E = 3 vs 5 tokens at equal cost
    # A measured mean committed length overrides the extrapolation at its window.
    assert best_window(costs, 0.8, observed={4: 1.2}) == 2


def run(target, auto, temperature=0.0, drafter=None):
    decoder = SpeculativeDecoder(
        target,
        drafter or JacobiDrafter(window=16),
        rule="sjd",
        sampling=SamplingConfig(temperature=temperature),
        auto_window=auto,
    )
    return decoder.generate(TokenPrompt.from_lists(PROMPTS), 40, seeds=[0, 1, 2])


def test_a_fixed_table_picks_its_best_window(target):
    cheap_to_four = {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 6: 9.0, 8: 9.0, 12: 9.0, 16: 9.0}
    out = run(target, AutoWindow(costs=cheap_to_four, interval=1000))  # no revision: the table's choice throughout
    assert set(out.stats.windows) == {4}
    assert out.stats.calibration_s == 0.0


def test_nothing_pays_so_it_runs_plain_ar(target):
    dear = {w: 10.0 for w in (1, 2, 3, 4, 6, 8, 12, 16)}
    out = run(target, AutoWindow(costs=dear))
    assert set(out.stats.windows) == {0}
    assert out.stats.nfe == 40  # one forward per token after the prompt's


def test_the_window_follows_the_observed_acceptance(target):
    # Costs rise gently: the prior (0.6) starts wide; at greedy decoding over random weights drafts rarely
    # survive, so the observed rate moves the window down, and each step verified the window then chosen.
    costs = {1: 1.05, 2: 1.1, 3: 1.15, 4: 1.2, 6: 1.5, 8: 1.8, 12: 2.4, 16: 3.0}
    auto = AutoWindow(costs=costs, interval=4)
    out = run(target, auto)
    windows = out.stats.windows
    assert windows[0] == best_window({0: 1.0, **costs}, auto.prior)
    assert len(set(windows)) > 1 and windows[-1] < windows[0]


@pytest.mark.parametrize("kind", ["jacobi", "draft"])
def test_greedy_decoding_with_changing_windows_equals_ar(target, small_draft, kind):
    ar = SpeculativeDecoder(target, sampling=SamplingConfig(temperature=0.0))
    expected = ar.generate(TokenPrompt.from_lists(PROMPTS), 40, seeds=[0, 1, 2]).tokens
    drafter = JacobiDrafter(window=16) if kind == "jacobi" else DraftModelDrafter(small_draft, window=16)
    costs = {1: 1.05, 2: 1.1, 3: 1.15, 4: 1.2, 6: 1.5, 8: 1.8, 12: 2.4, 16: 3.0}
    out = run(target, AutoWindow(costs=costs, interval=3), drafter=drafter)
    assert len(set(out.stats.windows)) > 1
    assert torch.equal(out.tokens, expected)


def test_auto_is_a_window_value_of_every_drafting_method(target, small_draft):
    assert parse_method("sjd:window=auto") == ("sjd", {"window": "auto"})
    decoder = build_decoder(target, "sjd", {"window": "auto"})
    assert decoder.auto_window is not None and decoder.window == 16
    out = decoder.generate(TokenPrompt.from_lists(PROMPTS), 24, seeds=[0, 1, 2])  # measures its own costs
    assert out.stats.calibration_s > 0 and out.tokens.shape == (3, 24)
    assert build_decoder(target, "draft", {"window": "auto"}, draft=small_draft).auto_window is not None
    with pytest.raises(ValueError, match="window of method 'sjd' takes int or 'auto', got 'wide'"):
        build_decoder(target, "sjd", {"window": "wide"})
    with pytest.raises(ValueError, match="windows"):
        AutoWindow(windows=[0, 4])
