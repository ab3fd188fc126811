"""`mmaccel bench engine`: every record's figures come from the same interleaved runs; bad input writes nothing."""

import pytest

from mmaccel.cli import main
from mmaccel.image.bench_engine import format_table, run_engine_bench, timed_windows, verified_drafts
from mmaccel.image.pipeline import ImageARPipeline
from mmaccel.methods import parse_method
from mmaccel.window import CANDIDATES


def test_engine_bench_records_ceilings_from_the_windows_each_method_ran():
    records = run_engine_bench(["sjd:window=4"], batch_sizes=[1], windows=[1, 4], repeats=1)
    by_method = {r["method"]: r for r in records}
    assert set(by_method) == {"minimal", "ar", "sjd:window=4", "verify_cost"}
    ar, sjd, cost = by_method["ar"], by_method["sjd:window=4"], by_method["verify_cost"]["ratio_to_t1"]
    assert ar["speedup"] == 1.0 and ar["step_compression"] == 1.0 and ar["windows_used"] == [0]
    assert sjd["windows_used"] == [4] and sjd["step_compression"] == ar["nfe"] / sjd["nfe"]
    # The ceiling: AR forwards over the cost of the method's forwards, the prompt's at t(1); Jacobi drafts cost
    # no forwards of their own.
    assert sjd["ceiling"] == pytest.approx(ar["nfe"] / (1 + (sjd["nfe"] - 1) * cost["5"]))
    assert sjd["ceiling_verify_only"] == sjd["ceiling"] and sjd["t_draft_s"] is None
    assert sjd["draft_forwards_per_step"] == 0
    assert sjd["share_of_ceiling"] == pytest.approx(sjd["speedup"] / sjd["ceiling"])
    assert sjd["cpu_s"] > 0 and sjd["cold_speedup"] > 0 and sjd["calibration_s"] == 0
    assert len(sjd["walls_s"]) == 1 and sjd["wall_s"] == sjd["walls_s"][0] and sjd["mean_window_per_repeat"] == [4.0]
    assert "minimal static-cache AR loop" in format_table(records)


def test_a_drafter_with_its_own_forwards_counts_them_in_the_ceiling():
    records = run_engine_bench(["eagle:window=2"], batch_sizes=[1], windows=[2], repeats=1)
    by_method = {r["method"]: r for r in records}
    ar, eagle = by_method["ar"], by_method["eagle:window=2"]
    cost = by_method["verify_cost"]
    assert eagle["t_draft_s"] > 0 and eagle["draft_forwards_per_step"] > 0
    drafting = eagle["draft_forwards_per_step"] * (eagle["nfe"] - 1) * eagle["t_draft_s"] / cost["t_s"]["1"]
    verify = 1 + (eagle["nfe"] - 1) * cost["ratio_to_t1"]["3"]
    assert eagle["ceiling_verify_only"] == pytest.approx(ar["nfe"] / verify)
    assert eagle["ceiling"] == pytest.approx(ar["nfe"] / (verify + drafting))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--batch-sizes", "0"], ["--batch-sizes"]),
        (["--windows", "0"], ["--windows"]),
        (["--repeats", "0"], ["--repeats"]),
        (["--methods", "sjd:window=wide"], ["window", "'auto'"]),
        (["--threads", "0"], ["--threads"]),
    ],
)
def test_engine_bench_refuses_bad_input(tmp_path, capsys, args, words):
    code = main(["bench", "engine", "--json", str(tmp_path / "e.json"), *args])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_every_method_gets_its_own_forward_timed(model_dir):
    """Each method's verify forward is among the timed lengths, so no ceiling is left blank: a window the
    --windows list lacks (EAGLE's 5), a static tree's nodes, a dynamic tree's budget, window=auto's candidates."""
    pipe = ImageARPipeline.from_pretrained(model_dir)

    def decoder(name):
        spec, params = parse_method(name)
        return pipe.build_decoder(spec, **params)

    chain, auto = decoder("sjd:window=5"), decoder("sjd:window=auto")
    tree, dynamic = decoder("draft-tree"), decoder("draft-dynamic:budget=20")
    assert verified_drafts(chain.drafter, 5) == 5 and verified_drafts(chain.drafter, 0) == 0
    assert verified_drafts(tree.drafter, tree.drafter.window) == 4 + 8 + 16 + 16  # tree=4x2x2x1
    assert verified_drafts(dynamic.drafter, dynamic.drafter.window) == 20
    assert timed_windows([1, 2, 4, 8, 16], [decoder("ar"), chain]) == [1, 2, 4, 5, 8, 16]
    assert timed_windows([1, 16], [tree, dynamic]) == [1, 16, 20, 44]
    assert timed_windows([16], [auto]) == sorted(CANDIDATES)
