"""window="auto": the decoder runs the window its cost table and the observed acceptance say is best."""

import pytest
import torch

from mmaccel import DraftModelDrafter, JacobiDrafter, SamplingConfig, SpeculativeDecoder, TokenPrompt
from mmaccel.methods import build_decoder, parse_method
from mmaccel.window import CANDIDATES, AutoWindow, best_window, expected_committed

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


def test_the_window_shrinks_where_drafts_do_not_pay(target):
    # Greedy decoding over random weights: drafts rarely survive, so each window measures slower than AR and
    # the decoder walks down from the prior's window to plain AR.
    costs = {1: 1.05, 2: 1.1, 3: 1.15, 4: 1.2, 6: 1.5, 8: 1.8, 12: 2.4, 16: 3.0}
    auto = AutoWindow(costs=costs, interval=2)
    out = run(target, auto)
    windows = out.stats.windows
    assert windows[0] == best_window({0: 1.0, **costs}, auto.prior) > 0 and windows[-1] == 0
    assert all(a >= b for a, b in zip(windows, windows[1:]))  # it only ever shrinks


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


def feed(auto, window, tokens_per_step, intervals):
    seen = [window]
    for _ in range(intervals):
        for _ in range(auto.interval):
            accepted = torch.full((4,), tokens_per_step(window) - 1)
            auto.observe(window, accepted, torch.ones(4, dtype=torch.bool))
        window = auto.choose(window)
        seen.append(window)
    return seen


def test_it_moves_to_the_window_whose_measured_rate_is_best():
    windows = (1, 2, 3, 4, 6, 8, 12, 16)
    # Verifying L drafts costs 1 + L/2 AR steps and commits 1 + min(L, 3) tokens: window 3 is best (4 tokens at
    # cost 2.5). Measured at 16 (4 tokens, cost 9), a narrower window commits at most 4: window 3 could pay
    # most, and it does, so it is kept.
    auto = AutoWindow(costs={w: 1 + w / 2 for w in windows}, interval=2, start=16)
    auto.begin(auto.costs)
    seen = feed(auto, 16, lambda w: 1 + min(w, 3), 12)
    assert seen[:4] == [16, 16, 16, 3] and set(seen[3:]) == {3}  # two intervals of warm-up, then one measured
    # Where no window can pay, plain AR follows at once.
    auto = AutoWindow(costs={w: 1 + w for w in windows}, interval=2, start=8)
    auto.begin(auto.costs)
    assert feed(auto, 8, lambda w: 1.5, 3)[-1] == 0


def test_a_wider_window_is_tried_where_the_narrow_one_says_it_could_pay():
    # Cheap verification (cost 1 + L/40) and T(L) = 1 + L/4: measured at 2 (1.5 tokens), window 16 is credited
    # 1 + 0.5 * 16 / 2 = 5 tokens; it is tried, measured (5 tokens at cost 1.4), and kept.
    windows = (1, 2, 4, 8, 16)
    auto = AutoWindow(costs={w: 1 + w / 40 for w in windows}, windows=windows, interval=2, start=2)
    auto.begin(auto.costs)
    assert auto.estimate(16) == expected_committed(auto.prior, 16)  # nothing measured yet: the prior
    seen = feed(auto, 2, lambda w: 1 + w / 4, 8)
    assert seen[3] == 16 and seen[-1] == 16
    assert auto.estimate(1) == 1.5  # narrower than measured windows: at most the narrowest one's T(2)
    assert auto.estimate(8) == 3.0  # between 2 and 16: at most T(16) = 5 and the line through T(2), 3


def test_the_lead_in_is_not_measured():
    auto = AutoWindow(costs={w: 1.0 for w in CANDIDATES}, interval=2, lead_in=0.75, start=4)
    auto.begin(auto.costs, length=40)  # 30 tokens per sample of lead-in; each interval commits 10 per sample
    feed(auto, 4, lambda w: 5, 3)  # two intervals of warm-up, then the third still inside the lead-in
    assert auto.observed == {}
    feed(auto, 4, lambda w: 5, 1)
    assert auto.observed == {4: [40.0, 8.0, 0.0, 0.0, 0.0]}  # 4 samples x 2 steps x 5 tokens; a fixed table: untimed


def test_timed_steps_replace_the_cost_table():
    # The table says window 4 costs what AR costs; timed whole steps (drafting and rule included) say 4x.
    table = {w: 1.0 for w in CANDIDATES}
    for costs, best in [(None, 0), (table, 4)]:  # a fixed table is the truth: nothing timed counts
        auto = AutoWindow(costs=costs, windows=(4,))
        auto.begin(table)
        auto.observed.update({0: [800.0, 800.0, 1.0, 100.0, 0.9], 4: [2400.0, 800.0, 4.0, 100.0, 2.0]})
        assert auto.best() == best
    assert auto.seconds(4) == 1.0
    auto = AutoWindow(start=4)
    auto.begin({w: 1 + w / 4 for w in CANDIDATES})
    auto.observed.update({4: [2400.0, 800.0, 4.0, 100.0, 0.0]})  # 0.04 s a step at window 4 (cost 2)
    assert auto.seconds(4) == 0.04 and auto.seconds(8) == pytest.approx(0.04 * 3 / 2)  # scaled by the table
    assert auto.seconds(0) == pytest.approx(0.02)  # forwards not timed: the whole step, scaled


def test_plain_ar_costs_the_narrowest_windows_forward_not_its_whole_step():
    """A window's step holds its drafting and rule, which AR never pays: AR's step is estimated from the
    narrowest timed window's forward (0.03 s of its 0.04 s at cost 2: 0.015 s), not its whole step (0.02 s)."""
    auto = AutoWindow(start=4, windows=(4, 8), bonus=0.0, persist=False)
    auto.begin({w: 1 + w / 4 for w in CANDIDATES})
    auto.observed.update({4: [1920.0, 800.0, 4.0, 100.0, 3.0], 8: [2880.0, 800.0, 6.0, 100.0, 5.4]})
    assert auto.seconds(0) == pytest.approx(0.015)
    # Window 4 commits 2.4 tokens per 0.04 s (60 a second): more than AR at its whole step scaled (50 a second),
    # less than AR at its forward (66.7 a second).
    assert auto.rates()[4] == pytest.approx(60) and auto.rates()[0] == pytest.approx(1 / 0.015)
    assert auto.best() == 0


#: t(L+1) / t(1) of the default image model at batch 10 on this CPU (bench/engine_s4.json, guided verify).
BATCH10 = {1: 1.23, 2: 1.48, 3: 1.61, 4: 1.70, 6: 1.98, 8: 2.36, 12: 2.94, 16: 3.41}


@pytest.mark.parametrize(
    "tokens_per_step, best",
    [
        ({w: 1 + 0.2 * w**0.85 for w in BATCH10}, 0),  # T(1) = 1.2 per 1.23 ... T(16) = 3.11 per 3.41: all lose
        ({**{w: 1.2 for w in BATCH10}, 4: 2.0}, 4),  # window 4 commits 2.0 per 1.70: the only one that pays
        ({w: 1 + 0.22 * w for w in BATCH10}, 16),  # T(16) = 4.52 per 3.41: 1.33, the widest is best
    ],
)
def test_at_batch_10_a_fixed_table_picks_ar_where_every_window_loses(tokens_per_step, best):
    """With the cost table fixed, the choice is the table's: the window whose measured tokens per step over
    t(L+1)/t(1) is highest, and plain AR (rate 1) where no window's exceeds it."""
    auto = AutoWindow(costs=BATCH10, interval=1, lead_in=0.0)
    auto.begin(BATCH10)
    steps = 10 * 4000  # sample-steps: enough that the optimism bonus (0.5 / sqrt(steps)) decides nothing
    auto.observed.update({w: [t * steps, steps, 0.0, 0.0, 0.0] for w, t in tokens_per_step.items()})
    rates = {0: 1.0, **{w: t / BATCH10[w] for w, t in tokens_per_step.items()}}
    assert auto.best() == best == max(rates, key=rates.get)
    # From any window, the next interval moves there (or stays, within the margin).
    assert feed(auto, 16, lambda w: tokens_per_step[w] if w else 1, 3)[-1] == best


def test_at_batch_10_the_decoder_runs_ar_when_the_table_says_nothing_pays(target):
    # Greedy decoding over random weights: drafts rarely survive, so with batch-10 costs every window loses
    # once measured and the decoder ends in plain AR; tokens are AR's.
    prompts = [[1 + i] * (1 + i % 4) for i in range(10)]
    ar = SpeculativeDecoder(target, sampling=SamplingConfig(temperature=0.0))
    expected = ar.generate(TokenPrompt.from_lists(prompts), 40, seeds=list(range(10))).tokens
    auto = AutoWindow(costs=BATCH10, interval=2, lead_in=0.0)
    decoder = SpeculativeDecoder(
        target, JacobiDrafter(window=16), rule="sjd", sampling=SamplingConfig(temperature=0.0), auto_window=auto
    )
    out = decoder.generate(TokenPrompt.from_lists(prompts), 40, seeds=list(range(10)))
    assert out.stats.windows[0] == best_window({0: 1.0, **BATCH10}, auto.prior) > 0  # the prior's guess
    assert out.stats.windows[-1] == 0 and torch.equal(out.tokens, expected)


#: t(L+1) / t(1) of the default image model at batch 1 on this CPU (bench/engine_s5.json, guided verify).
BATCH1 = {1: 1.00, 2: 1.12, 3: 1.09, 4: 1.17, 6: 1.17, 8: 1.22, 12: 1.37, 16: 1.46}


@pytest.mark.parametrize("unlucky", [1.3, 1.1])
def test_one_unlucky_interval_does_not_bar_the_wide_windows_for_good(unlucky):
    """At batch 1, Jacobi drafts commit T(L) tokens a step, most at L = 16 (3.0 / 1.46 per AR step). If the first
    measured interval, at window 8, commits only ``unlucky`` tokens a step, window 1 looks best (1.25 per 1.00)
    and every wider window's credit is bounded by that one interval. Left alone, window 8's credit grows until it
    is tried again, measured right, and the decoder ends at 16 (with a radius that only shrank, it stayed at 1)."""
    true = {1: 1.25, 2: 1.4, 3: 1.5, 4: 1.6, 6: 1.8, 8: 2.0, 12: 2.5, 16: 3.0}
    auto = AutoWindow(costs=BATCH1, interval=8, lead_in=0.0)
    window = auto.begin(BATCH1)
    assert window == 8  # the prior's guess
    seen = [window]
    for interval in range(30):
        tokens = unlucky if interval == 2 else true[window]  # intervals 0 and 1 are the warm-up
        for _ in range(auto.interval):
            auto.observe(window, torch.tensor([tokens - 1.0]), torch.ones(1, dtype=torch.bool))
        window = auto.choose(window)
        seen.append(window)
    assert 1 in seen[:8]  # the unlucky interval did send it to window 1
    assert set(seen[-10:]) == {16}


def test_a_finished_row_still_forwarded_counts_against_its_window():
    """T(L) is tokens per row forwarded: two of four rows finished (waiting to retire) commit nothing, so the two
    running ones' 3 tokens a step are credited as 1.5 per row, what the batch gets for the rows it pays for."""
    auto = AutoWindow(costs={w: 1.0 for w in CANDIDATES}, interval=2, lead_in=0.0, start=4)
    auto.begin(auto.costs)
    running = torch.tensor([True, False, True, False])
    for _ in range(3 * auto.interval):  # two intervals of warm-up, one measured
        auto.observe(4, torch.full((4,), 2), running)
        auto.choose(4)
    tokens, row_steps = auto.observed[4][:2]
    assert tokens / row_steps == pytest.approx(1.5)


@pytest.mark.parametrize("lead_in_tokens, expected", [(1.0, 0), (2.2, 2)])
def test_a_window_is_weighed_against_ar_over_whole_generations(lead_in_tokens, expected):
    """At 2 AR steps a verify, window 2 commits 2.2 tokens a step in its measured intervals: 10% over AR's rate.
    Where its unmeasured lead-in (the first 5 intervals) commits 1 token a step, the generation got 1.6 per step
    over all: the discount (1.6 / 2.2) sends the next generation to plain AR. Where the lead-in commits as much
    as the rest, nothing is discounted and the window stays."""
    costs = {w: 2.0 for w in CANDIDATES}
    key = f"whole-generation-{lead_in_tokens}"  # in memory only: a key of its own per case
    auto = AutoWindow(costs=costs, windows=(2,), interval=2, lead_in=0.5, bonus=0.0, start=2, persist=False)
    auto.begin(costs, key=key, length=22)
    calls = iter(range(10**6))  # feed asks once a step: the first 5 intervals (10 steps) are the lead-in
    seen = feed(auto, 2, lambda w: lead_in_tokens if next(calls) < 10 else 2.2, 10)
    assert set(seen) == {2}  # within the generation the measured rate is all it knows
    auto.finish()
    assert auto.discount() == pytest.approx(min(1.0, (5 * lead_in_tokens + 5 * 2.2) / 10 / 2.2), rel=0.05)
    auto = AutoWindow(costs=costs, windows=(2,), interval=2, lead_in=0.5, bonus=0.0, persist=False)
    assert auto.begin(costs, key=key, length=22) == expected  # what the last one learned


@pytest.mark.parametrize("row_steps, expected", [(100, 0), (4000, 2)])
def test_a_generation_starts_from_the_lower_confidence_bound(row_steps, expected):
    """Window 2 measured 2.2 tokens a step at 2 AR steps a verify: 10% over AR. Over 100 row-steps the lower
    bound (radius 0.5 * sqrt(log(101) / 100) = 0.11) is under AR's rate, so the generation starts in plain AR
    (what an exploring start would cost is not worth 10% it may not have); over 4000 it is 7.5% over, and the
    window starts. Within a generation the upper bound still explores (the other tests)."""
    costs = {w: 2.0 for w in CANDIDATES}
    auto = AutoWindow(costs=costs, windows=(2,), persist=False)
    key = f"lower-bound-{row_steps}"  # in memory only
    auto.begin(costs, key=key)
    auto.observed.update({2: [2.2 * row_steps, float(row_steps), 0.0, 0.0, 0.0]})
    assert auto.begin(costs, key=key) == expected
    assert auto.best() == 2  # the optimistic bound, which a generation explores by, prefers the window either way


def test_after_2_4_8_generations_in_plain_ar_one_explores_again():
    """Measured over few row-steps, window 2's lower bound is under AR's rate and its upper bound over it: the
    generations start in AR, except after 2, 4 and 8 of them in a row, which start from the upper bound, so
    unlucky intervals cannot keep a window out for good and exploring stays a vanishing share."""
    costs = {w: 2.0 for w in CANDIDATES}
    auto = AutoWindow(costs=costs, windows=(2,), persist=False)
    key = "explore-again"  # in memory only
    auto.begin(costs, key=key)
    auto.observed.update({2: [220.0, 100.0, 0.0, 0.0, 0.0]})
    starts = [auto.begin(costs, key=key) for _ in range(16)]
    assert [i for i, w in enumerate(starts) if w] == [2, 4, 8]


@pytest.mark.parametrize("window_rate, expected", [(90.0, 0), (110.0, 2)])
def test_a_window_whose_whole_generations_lost_to_ar_is_not_started_from(window_rate, expected):
    """Window 2's intervals say it pays (the 4000-row-step case above starts it). Generations that started there
    and committed fewer tokens per second, whole, than those that ran plain AR keep the next one in AR; ones that
    committed more do not."""
    costs = {w: 2.0 for w in CANDIDATES}
    auto = AutoWindow(windows=(2,), persist=False)  # timed: no fixed table
    key = f"whole-starts-{window_rate}"  # in memory only
    auto.begin(costs, key=key)
    auto.observed.update({2: [2.2 * 4000, 4000.0, 0.0, 0.0, 0.0]})
    assert auto.begin(costs, key=key) == 2
    auto.starts.update({0: [2.0, 2 * 100.0], 2: [2.0, 2 * window_rate]})
    assert auto.begin(costs, key=key) == expected
    assert auto.lost(2) == (expected == 0)


def test_generations_are_recorded_by_their_start_window_and_a_fixed_table_records_none():
    costs = {w: 2.0 for w in CANDIDATES}
    auto = AutoWindow(windows=(2,), persist=False)
    auto.begin(costs, key="starts-recorded", length=64)
    auto.finish()
    assert auto.starts == {}  # the cold generation explores: not a start's record
    auto.observed.update({2: [2.2 * 4000, 4000.0, 0.0, 0.0, 0.0]})
    assert auto.begin(costs, key="starts-recorded", length=64) == 2
    auto.finish()
    assert auto.starts[2][0] == 1 and auto.starts[2][1] > 0
    fixed = AutoWindow(costs=costs, windows=(2,), persist=False)
    fixed.begin(costs, key="starts-fixed", length=64)
    fixed.observed.update({2: [2.2 * 4000, 4000.0, 0.0, 0.0, 0.0]})
    fixed.starts.update({0: [1.0, 100.0], 2: [1.0, 1.0]})
    assert fixed.begin(costs, key="starts-fixed", length=64) == 2  # a fixed table is the truth: no veto
    fixed.finish()
    assert fixed.starts[2] == [1.0, 1.0]
