"""``mmaccel bench families`` at tiny size: the CLI writes a record per (family, batch, method) with the documented
fields, AR is the unit of step compression, both build paths work, bad input names its parameter, and the ``real``
shapes are the released architectures (checked on the meta device, nothing allocated)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mmaccel.cli import build_parser, main
from mmaccel.image.bench_families import FamiliesBenchConfig, run_families
from mmaccel.image.testing.random_models import FAMILY_NAMES, build_family, count_parameters

FIELDS = (
    "family", "model", "size", "build", "device", "dtype", "params", "lm_params", "method", "batch_size", "window",
    "tokens", "image_tokens", "nfe", "steps_per_image", "step_compression", "wall_s", "per_token_ms",
    "ms_per_forward", "tokens_per_s", "speedup_vs_ar", "warmup_tokens", "prompt_tokens",
)  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cli_writes_records_with_the_documented_fields(tmp_path, capsys):
    out = tmp_path / "families.json"
    args = ["bench", "families", "--size", "tiny", "--families", "llamagen,emu3", "--batch-sizes", "1,2",
            "--methods", "sjd,ar,gsd", "--max-tokens", "6", "--warmup-tokens", "2", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    records = json.loads(out.read_text())
    keys = [(r["family"], r["batch_size"], r["method"]) for r in records]
    # AR first within each batch, whatever order --methods gave.
    assert keys == [(f, b, m) for f in ("llamagen", "emu3") for b in (1, 2) for m in ("ar", "sjd", "gsd")]
    for r in records:
        assert all(field in r for field in FIELDS), sorted(set(FIELDS) - set(r))
        assert r["tokens"] == 6 < r["image_tokens"] and r["size"] == "tiny" and r["build"] == "disk"
        assert 1 <= r["nfe"] <= r["tokens"] and r["step_compression"] == pytest.approx(r["tokens"] / r["nfe"])
        assert r["per_token_ms"] == pytest.approx(1000 * r["wall_s"] / r["tokens"])
        assert r["ms_per_forward"] == pytest.approx(1000 * r["wall_s"] / r["nfe"])
        assert r["dtype"] == "float32" and r["device"].startswith("cpu") and r["params"] >= r["lm_params"] > 0
    for r in records:
        if r["method"] == "ar":
            assert r["step_compression"] == 1.0 and r["nfe"] == r["tokens"] and r["window"] is None
            assert r["speedup_vs_ar"] == 1.0
        else:
            assert r["window"] == 16
    assert [r["image_tokens"] for r in records if r["method"] == "ar"] == [16, 16, 20, 20]  # emu3 rows end in EOL
    printed = capsys.readouterr().out
    assert "llamagen" in printed and "emu3" in printed and "ms/fwd" in printed


def test_direct_build_without_ar_in_bfloat16():
    config = FamiliesBenchConfig(
        families=("chameleon",), size="tiny", batch_sizes=(2,), methods=("sjd",), max_tokens=5, dtype="bfloat16",
        warmup_tokens=1, build="direct",
    )  # fmt: skip
    (record,) = run_families(config, log=lambda *_: None)
    assert record["build"] == "direct" and record["dtype"] == "bfloat16" and record["method"] == "sjd"
    assert record["speedup_vs_ar"] is None and record["tokens"] == 5 and record["step_compression"] >= 1


@pytest.mark.parametrize(
    "flag, value, match",
    [
        ("--families", "llamagen,imagen", r"--families: unknown image family 'imagen'"),
        ("--methods", "ar,warp", r"--methods: unknown method 'warp'"),
        ("--methods", "ar,lantern++", r"--methods: 'lantern\+\+' needs a draft model"),
        ("--batch-sizes", "1,0", r"--batch-sizes: every batch size must be >= 1, got 0"),
        ("--batch-sizes", "1,x", r"--batch-sizes takes comma-separated int values"),
        ("--max-tokens", "0", r"--max-tokens must be >= 1"),
        ("--size", "huge", r"--size: unknown size 'huge'"),
        ("--dtype", "float8", r"--dtype: unknown dtype 'float8'"),
        ("--device", "tpu", r"--device"),
    ],
)
def test_bad_input_names_the_parameter(tmp_path, capsys, flag, value, match):
    out = tmp_path / "never.json"
    assert main(["bench", "families", "--size", "tiny", "--json", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmaccel: error:")
    assert re.search(match, err), err
    assert not out.exists()


def test_cli_defaults_are_every_family_small_ar_sjd_gsd_batch_1_and_8():
    args = build_parser().parse_args(["bench", "families"])
    assert args.families == ",".join(FAMILY_NAMES) and args.size == "small"
    assert (args.methods, args.batch_sizes, args.device, args.dtype) == ("ar,sjd,gsd", "1,8", "cpu", "float32")


# name -> (grid, row end, parameters of the per-step transformer, in billions, +-2%)
REAL = {
    "llamagen": ((24, 24), False, 0.775),  # LlamaGen reports 775M for GPT-XL
    "llamagen-t2i": ((32, 32), False, 0.778),
    "janus": ((24, 24), False, 1.485),
    "chameleon": ((48, 48), True, 7.01),
    "emu3": ((90, 90), True, 8.49),  # Emu3: 8.49B
}


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_real_size_is_the_released_architecture(name):
    family = build_family(name, "real", device="meta", dtype=torch.bfloat16)
    grid, row_end, billions = REAL[name]
    assert family.layout.grid == grid and (family.layout.row_end is not None) == row_end
    assert count_parameters(family)[1] / 1e9 == pytest.approx(billions, rel=0.02)
