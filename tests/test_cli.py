"""The command line: subcommands are listed, `bench core` prints its table and writes its JSON atomically."""

import json

import pytest

from mmaccel.bench import core
from mmaccel.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "generate" in out and "bench" in out
    subparsers = build_parser()._subparsers._group_actions[0].choices
    assert "image" in subparsers["generate"]._subparsers._group_actions[0].choices
    assert {"core", "image"} <= set(subparsers["bench"]._subparsers._group_actions[0].choices)


def test_bench_core_measures_every_rule(tmp_path, monkeypatch, capsys):
    small = dict(vocab=512, window=4, batch=2, context=16, k=16, repeats=1, hidden_size=32, layers=1)
    real_run = core.run
    monkeypatch.setattr(core, "run", lambda **kw: real_run(**{**kw, **small}))
    out = tmp_path / "core.json"
    assert main(["bench", "core", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["rule"] for r in records] == list(core.RULE_NAMES)
    for r in records:
        assert r["rule_ms_per_step"] > 0 and r["forward_ms_per_step"] > 0
        assert r["ratio_to_forward"] == pytest.approx(r["rule_ms_per_step"] / r["forward_ms_per_step"])
    table = capsys.readouterr().out
    assert all(name in table for name in core.RULE_NAMES)
    assert [p.name for p in tmp_path.iterdir()] == ["core.json"]  # no temporary file left behind


def test_json_to_missing_directory_is_an_error(capsys):
    assert main(["bench", "core", "--json", "/nonexistent/dir/x.json", "--vocab", "64", "--k", "8"]) == 2
    assert "/nonexistent/dir" in capsys.readouterr().err


def test_atomic_outputs_get_the_mode_a_plain_open_would_give(tmp_path):
    import os

    from mmaccel.io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left beside it
