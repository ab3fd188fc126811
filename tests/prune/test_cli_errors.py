"""``mmaccel bench prune`` refuses bad values before any work, through the CLI's one error path."""

from __future__ import annotations

import json

import pytest

from mmaccel.cli import main


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the bench gets as far as loading a model."""
    import mmaccel.prune.bench as bench

    def load_model(*args, **kwargs):
        raise AssertionError("the bench started work before refusing its arguments")

    monkeypatch.setattr(bench, "load_model", load_model)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "fastv:layer=abc"], "--param: layer of fastv takes int, got 'abc'"),
        (["--param", "fastv:layer=1.5"], "layer of fastv takes int, got '1.5'"),
        (["--param", "fastv:nope=1"], "--param: unknown parameter(s) ['nope'] for fastv; it takes ['layer']"),
        (["--param", "holitom:inner_layer=x"], "inner_layer of holitom takes int or none, got 'x'"),
        (["--param", "holitom:tau=2"], "tau must be in"),
        (["--param", "fastv"], "--param looks like method:name=value"),
        (["--param", "nope:x=1"], "--param: 'nope' is not one of the benchmarked pruning methods"),
        (["--methods", "none,fastv", "--param", "tome:proportional=true"], "--param: 'tome' is not one of"),
        (["--methods", "none,fastv:layer=abc"], "--methods: layer of fastv takes int, got 'abc'"),
        (["--methods", "divprune:proportional=maybe"], "--methods: proportional of divprune takes bool"),
        (["--methods", "divprune:nope=1"], "unknown parameter(s) ['nope'] for divprune"),
        (["--methods", "divprune:proportional"], "parameters look like name=value"),
        (["--methods", "none,nope"], "--methods: unknown method 'nope'"),
        (["--limit", "0"], "--limit must be a whole number >= 1, got '0'"),
        (["--limit", "-3"], "--limit must be a whole number >= 1, got '-3'"),
        (["--limit", "abc"], "--limit must be a whole number >= 1, got 'abc'"),
        (["--keep", "abc"], "--keep takes comma-separated keep ratios in (0, 1], got 'abc'"),
        (["--keep", "0.5,"], "--keep takes comma-separated keep ratios"),
        (["--keep", "0"], "--keep must be in (0, 1], got 0.0"),
        (["--keep", "0.5,1.5"], "--keep must be in (0, 1], got 1.5"),
        (["--keep", "nan"], "--keep must be in (0, 1]"),
        (["--batch-size", "0"], "--batch-size must be a whole number >= 1, got '0'"),
    ],
)
def test_bad_values_exit_2_naming_the_flag_and_leave_no_file(args, message, tmp_path, capsys, no_work):
    out = tmp_path / "out.json"
    assert main(["bench", "prune", "--json", str(out), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("mmaccel: error: ")
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_fails_in_a_subprocess_without_a_traceback(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.json"
    argv = [sys.executable, "-m", "mmaccel.cli", "bench", "prune", "--param", "fastv:layer=abc", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "mmaccel: error: --param: layer of fastv takes int, got 'abc'"
    assert not out.exists()


def test_values_are_typed_by_the_method_signature():
    from mmaccel.prune.bench_arguments import check_arguments

    methods, keeps, params, limit, batch_size = check_arguments(
        "none,holitom,divprune:proportional=true",
        "0.5,1",
        {"holitom": {"inner_layer": "none", "tau": "0.9", "neighbours": "5"}},
        "3",
        "2",
    )
    assert keeps == [0.5, 1.0] and limit == 3 and batch_size == 2
    assert params == {"holitom": {"inner_layer": None, "tau": 0.9, "neighbours": 5}}
    assert isinstance(params["holitom"]["tau"], float) and isinstance(params["holitom"]["neighbours"], int)
    # Python values are checked, not converted: a str where an int belongs is refused like typed text.
    with pytest.raises(ValueError, match="params: layer of fastv takes int, got 'abc'"):
        check_arguments("fastv", "0.5", {"fastv": {"layer": "abc"}}, None, 1)
    with pytest.raises(ValueError, match="limit must be a whole number >= 1, got 0"):
        check_arguments("fastv", "0.5", None, 0, 1)


def test_python_callers_get_the_same_checks_before_any_work(no_work):
    from mmaccel.prune.bench import run_bench

    with pytest.raises(ValueError, match="limit must be a whole number >= 1, got 0"):
        run_bench("default", "none,fastv", "0.5", limit=0)
    with pytest.raises(ValueError, match="keeps takes comma-separated keep ratios"):
        run_bench("default", "none,fastv", "abc")
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        run_bench("default", "none,fastv", "0.5", batch_size=0)


def test_every_method_parameter_is_annotated_with_a_type_its_default_has():
    import inspect

    from mmaccel.params import coerce, parameters_of
    from mmaccel.prune import PRUNE_METHODS, method_class

    for name in PRUNE_METHODS[1:]:
        for param, spec in parameters_of(method_class(name), skip=["keep"]).items():
            assert spec.annotation is not inspect.Parameter.empty, f"{name}.{param} has no annotation"
            assert coerce(spec.default, spec.annotation, param, name) == spec.default


def test_progress_goes_to_stderr_and_the_table_to_stdout(checkpoint, tmp_path, capsys):
    folder, questions = checkpoint
    out = tmp_path / "r.json"
    argv = ["bench", "prune", "--model", str(folder), "--questions", str(questions), "--methods", "none,fastv"]
    assert main([*argv, "--keep", "0.5", "--batch-size", "1", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "fastv keep=0.5" in captured.err and "6/6" in captured.err  # 2 runs x 3 questions
    assert "question" not in captured.out and "| fastv | 0.5 |" in captured.out
    assert len(json.loads(out.read_text())) == 2
