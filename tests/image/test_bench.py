"""`mmaccel bench image` on the tiny model: every record has the DESIGN.md fields, AR is the unit of the
ratios, the second-seed AR run is there as the FID noise floor, and the JSON is written."""

import json

import pytest

from mmaccel.cli import main
from mmaccel.image.bench import run_bench


def test_bench_records(model_dir):
    records = run_bench(str(model_dir), methods=["ar", "sjd", "draft"], num_images=4, num_real=64, batch_size=2)
    assert [r["method"] for r in records] == ["ar", "sjd", "draft", "ar@seed2"]
    for r in records:
        for field in ("nfe", "tokens", "step_compression", "wall_s", "speedup", "fid", "class_accuracy"):
            assert field in r
        assert 1 <= r["nfe"] <= r["tokens"]
        assert 0 <= r["class_accuracy"] <= 1 and r["fid"] >= 0
    ar = records[0]
    assert ar["step_compression"] == pytest.approx(1.0) and ar["speedup"] == pytest.approx(1.0)
    assert ar["nfe"] == ar["tokens"]  # plain AR: one forward per token
    assert records[1]["step_compression"] == pytest.approx(ar["nfe"] / records[1]["nfe"])
    # the forwards each verify holds, and the ceiling those forwards allow (AR's own: exactly 1)
    assert [r["nodes"] for r in records] == [0, 16, 4, 0]
    assert ar["ceiling"] == pytest.approx(1.0)
    assert records[-1]["ceiling"] == pytest.approx(records[-1]["step_compression"])
    assert all(0 < r["ceiling"] for r in records)


def test_bench_tree_nodes(model_dir):
    records = run_bench(str(model_dir), methods=["mc-sjd-tree:tree=2x2x1"], num_images=2, num_real=8, batch_size=2)
    assert records[1]["nodes"] == 2 + 4 + 4


def test_bench_cli_writes_json(model_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [
        "bench",
        "image",
        "--model",
        str(model_dir),
        "--methods",
        "ar,gsd",
        "--num-images",
        "2",
        "--num-real",
        "32",
        "--batch-size",
        "2",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    assert [r["method"] for r in json.loads(out.read_text())] == ["ar", "gsd", "ar@seed2"]
    assert "gsd" in capsys.readouterr().out


def test_bench_unknown_method(model_dir, capsys):
    assert main(["bench", "image", "--model", str(model_dir), "--methods", "ar,warp", "--num-images", "1"]) == 2
    assert "warp" in capsys.readouterr().err


def test_bench_method_parameters_reach_the_rule(model_dir):
    # An out-of-range value is refused by the rule itself, so the parameter did reach it; a valid one runs and
    # the record keeps the full spec as its name.
    with pytest.raises(ValueError, match="delta"):
        run_bench(str(model_dir), methods=["lantern:delta=2.0"], num_images=1, num_real=8, batch_size=1)
    records = run_bench(str(model_dir), methods=["lantern:delta=0.3:k=5"], num_images=2, num_real=8, batch_size=2)
    assert [r["method"] for r in records] == ["ar", "lantern:delta=0.3:k=5", "ar@seed2"]


@pytest.mark.parametrize("spec, match", [("lantern:bogus=1", "bogus"), ("gsd:group", "group"), ("warp:k=1", "warp")])
def test_bench_bad_method_parameters(model_dir, spec, match):
    with pytest.raises(ValueError, match=match):
        run_bench(str(model_dir), methods=["ar", spec], num_images=1, num_real=8, batch_size=1)
