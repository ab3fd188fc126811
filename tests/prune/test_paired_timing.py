"""Every TTFT figure of a bench row comes from one paired measurement, ``none``'s included."""

from __future__ import annotations

import itertools
import statistics

import pytest

import mmaccel.prune.timing as timing
from mmaccel.cli import main


@pytest.fixture
def clock(monkeypatch):
    """A fake prefill timer whose machine slows down on every call (drift, as under load): a row whose figures
    came from different measurements would show it. Records which pairs each method was timed in."""
    ticks = itertools.count()
    pairs: list[tuple[str, tuple[list[float], list[float]]]] = []

    def prefill_time(model, batch):
        pruned = bool(model._forward_pre_hooks)  # a pruning session is installed
        return (0.5 if pruned else 1.0) * batch["input_ids"].shape[0] + 0.01 * next(ticks)

    real_pairs = timing.paired_prefills

    def paired_prefills(model, batches, method, keep, params, block=4):
        out = real_pairs(model, batches, method, keep, params, block)
        pairs.append((f"{method} {keep} {len(batches or [])}", out))
        return out

    monkeypatch.setattr(timing, "prefill_time", prefill_time)
    monkeypatch.setattr(timing, "paired_prefills", paired_prefills)
    return pairs


def test_each_row_speedup_divides_its_own_pair_and_none_is_their_unpruned_side(checkpoint, tmp_path, capsys, clock):
    import json

    folder, questions = checkpoint
    out = tmp_path / "r.json"
    argv = ["bench", "prune", "--model", str(folder), "--questions", str(questions), "--keep", "0.5"]
    assert main([*argv, "--methods", "none,fastv,divprune", "--batch-size", "2", "--json", str(out)]) == 0
    none, fastv, divprune = json.loads(out.read_text())
    # Per method: the batched pairs (one batch of 2), then the batch-1 pairs (3 questions).
    assert [name for name, _ in clock] == ["fastv 0.5 1", "fastv 0.5 3", "divprune 0.5 1", "divprune 0.5 3"]
    for record, (batched, single) in ((fastv, clock[0:2]), (divprune, clock[2:4])):
        (batch_unpruned, batch_pruned), (unpruned, pruned) = batched[1], single[1]
        assert record["reference_ttft_s"] == statistics.median(unpruned)
        assert record["ttft_s"] == statistics.median(pruned)
        assert record["ttft_speedup"] == record["reference_ttft_s"] / record["ttft_s"]
        assert record["reference_batch_ttft_s"] == statistics.median(batch_unpruned)
        assert record["batch_ttft_s"] == statistics.median(batch_pruned)
        assert record["batch_ttft_speedup"] == record["reference_batch_ttft_s"] / record["batch_ttft_s"]
    # The drifting clock makes each method's unpruned side differ: none is all of them together, not a time
    # taken on its own before the methods ran.
    assert fastv["reference_ttft_s"] != divprune["reference_ttft_s"]
    every_unpruned = [t for name, (unpruned, _) in clock if name.endswith(" 3") for t in unpruned]
    every_batch_unpruned = [t for name, (unpruned, _) in clock if name.endswith(" 1") for t in unpruned]
    assert none["ttft_s"] == none["reference_ttft_s"] == statistics.median(every_unpruned)
    assert none["batch_ttft_s"] == none["reference_batch_ttft_s"] == statistics.median(every_batch_unpruned)
    assert none["ttft_speedup"] == none["batch_ttft_speedup"] == 1.0
    table = capsys.readouterr().out
    ms = none["ttft_s"] * 1e3
    assert f"| none | 1.0 | 64.0 of 64 | 100.0% | {ms:.1f} -> {ms:.1f} | 1.00x |" in table
    assert f"| {fastv['reference_ttft_s'] * 1e3:.1f} -> {fastv['ttft_s'] * 1e3:.1f} | " in table


def test_none_alone_is_timed_on_its_own_with_speedup_one(checkpoint, clock):
    from mmaccel.prune.bench import run_bench

    folder, questions = checkpoint
    (none,) = run_bench(str(folder), "none", "0.5", questions, max_new_tokens=1, batch_size=2)
    assert clock == []
    assert none["ttft_s"] == none["reference_ttft_s"] > 0 and none["ttft_speedup"] == 1.0
    assert none["batch_ttft_speedup"] == 1.0


def test_a_method_that_cannot_run_leaves_none_timed_from_the_others(checkpoint, clock):
    from mmaccel.prune.bench import run_bench

    folder, questions = checkpoint
    none, holitom, fastv = run_bench(str(folder), "none,holitom,fastv", "0.5", questions, max_new_tokens=1)
    assert "takes no video" in holitom["error"]
    assert none["ttft_s"] == fastv["reference_ttft_s"] and none["ttft_speedup"] == 1.0
