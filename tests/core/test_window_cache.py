"""window="auto" keeps its calibration on disk: a second process neither measures costs nor explores again."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from mmaccel import TokenPrompt
from mmaccel import window as win
from mmaccel.methods import build_decoder
from mmaccel.window import AutoWindow, calibration_dir, calibration_key, measure_costs, model_fingerprint

from .conftest import make_tiny_llama

WINDOWS = (1, 2, 4)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache folder and a fresh process's memory for every test."""
    monkeypatch.setenv("MMACCEL_CACHE", str(tmp_path))
    monkeypatch.delenv(win.CACHE_ENV, raising=False)
    monkeypatch.setattr(win, "_MEASURED", {})
    monkeypatch.setattr(win, "_LEARNED", {})
    return tmp_path / "windows"


def new_process(monkeypatch):
    monkeypatch.setattr(win, "_MEASURED", {})
    monkeypatch.setattr(win, "_LEARNED", {})


class Forward:
    """A step forward that counts its calls (what a calibration costs)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, tokens, positions, cache):
        self.calls += 1


STATE = SimpleNamespace(
    last_token=torch.zeros(2, dtype=torch.long), last_pos=torch.zeros(2, dtype=torch.long), device=torch.device("cpu"),
    batch_size=2,
)


def test_a_stored_cost_table_is_read_back_instead_of_measured(cache, monkeypatch):
    forward = Forward()
    costs = measure_costs(object(), None, STATE, WINDOWS, forward=forward, persist="model-a|cpu|batch=2")
    assert forward.calls == 4 * 4 and set(costs) == {0, *WINDOWS}  # 4 rounds (one warm-up) x 4 lengths
    assert len(list(cache.glob("costs-*.json"))) == 1
    new_process(monkeypatch)
    again = Forward()
    assert measure_costs(object(), None, STATE, WINDOWS, forward=again, persist="model-a|cpu|batch=2") == costs
    assert again.calls == 0
    # Another key (model, device, batch) is measured anew, and so is a table lacking a window asked for.
    measure_costs(object(), None, STATE, WINDOWS, forward=again, persist="model-b|cpu|batch=2")
    assert again.calls == 16
    new_process(monkeypatch)
    wide = measure_costs(object(), None, STATE, (1, 2, 3, 4, 8), forward=again, persist="model-a|cpu|batch=2")
    assert again.calls == 16 + 16 and set(wide) == {0, 1, 2, 3, 4, 8}  # timed: 0, 1, 3 (the middle), 8


def test_a_calibration_times_four_lengths_and_interpolates_the_rest():
    assert win.anchor_windows(win.CANDIDATES) == [0, 1, 4, 16]
    assert win.anchor_windows((1, 2, 4)) == [0, 1, 2, 4] and win.anchor_windows((3,)) == [0, 3]
    timed = {0: 1.0, 1: 1.2, 4: 1.8, 16: 4.2}
    assert win.interpolate(timed, 4) == 1.8
    assert win.interpolate(timed, 2) == pytest.approx(1.4) and win.interpolate(timed, 10) == pytest.approx(3.0)


def test_a_damaged_or_foreign_file_is_measured_again(cache, monkeypatch):
    measure_costs(object(), None, STATE, WINDOWS, forward=Forward(), persist="k")
    (path,) = cache.glob("costs-*.json")
    for text in ["{not json", json.dumps({"version": 0, "key": "k", "costs": {}}), json.dumps({"version": 1})]:
        path.write_text(text)
        new_process(monkeypatch)
        forward = Forward()
        measure_costs(object(), None, STATE, WINDOWS, forward=forward, persist="k")
        assert forward.calls == 16
    assert json.loads(path.read_text())["key"] == "k"  # rewritten whole


def test_the_environment_variable_keeps_it_in_memory(cache, monkeypatch):
    monkeypatch.setenv(win.CACHE_ENV, "0")
    measure_costs(object(), None, STATE, WINDOWS, forward=Forward(), persist="k")
    auto = AutoWindow(costs={w: 1 + w / 2 for w in (1, 2, 3, 4)}, interval=1, lead_in=0, start=4)
    auto.begin(auto.costs, key="k|JacobiDrafter|SJDRule")
    for _ in range(4):
        auto.observe(4, torch.full((2,), 2), torch.ones(2, dtype=torch.bool))
        auto.choose(4)
    auto.finish()
    assert auto.observed and not cache.exists()


def feed(auto, window, tokens, steps):
    for _ in range(steps):
        auto.observe(window, torch.full((4,), tokens(window) - 1), torch.ones(4, dtype=torch.bool))
        window = auto.choose(window)
    return window


def test_what_was_measured_is_the_next_process_start(cache, monkeypatch):
    # Window 3 pays best (4 tokens at cost 2.5); once measured, a new process starts there, not at the prior's.
    costs = {w: 1 + w / 2 for w in (1, 2, 3, 4, 6, 8, 12, 16)}
    key = "model|cpu|batch=4|JacobiDrafter|SJDRule"
    auto = AutoWindow(costs=costs, interval=2, lead_in=0)  # a fixed table: not timed, so reproducible
    first = auto.begin(costs, key, length=100)
    assert first == win.best_window({0: 1.0, **costs}, auto.prior) != 3
    assert feed(auto, 16, lambda w: 1 + min(w, 3), 40) == 3
    auto.finish()
    assert len(list(cache.glob("rates-*.json"))) == 1
    new_process(monkeypatch)
    assert AutoWindow().begin(costs, key, length=100) == 3
    new_process(monkeypatch)
    assert AutoWindow(persist=False).begin(costs, key, length=100) == first  # the argument turns it off too
    assert AutoWindow().begin(costs, "another drafter", length=100) == first


def test_the_fingerprint_names_the_weights_not_the_object():
    a = make_tiny_llama(0)
    assert model_fingerprint(a) == model_fingerprint(copy.deepcopy(a))
    assert model_fingerprint(a) != model_fingerprint(make_tiny_llama(1))
    key = calibration_key(a, torch.device("cpu"), 3)
    assert "batch=3" in key and f"threads={torch.get_num_threads()}" in key and key.endswith("eager")
    assert calibration_key(a, torch.device("cpu"), 3, compiled=True) != key


def test_a_second_decoder_in_a_new_process_does_not_calibrate(target, cache, monkeypatch):
    prompt = TokenPrompt.from_lists([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    out = build_decoder(target, "sjd", {"window": "auto"}).generate(prompt, 24, seeds=[0, 1, 2])
    assert out.stats.calibration_s > 0 and list(cache.glob("costs-*.json"))
    assert calibration_dir() == cache
    new_process(monkeypatch)
    calls = []
    monkeypatch.setattr(win, "synchronize", lambda device: calls.append(device))  # around every timed forward
    build_decoder(target, "sjd", {"window": "auto"}).generate(prompt, 24, seeds=[0, 1, 2])
    assert calls == []  # measure_costs times nothing: the table came from disk
