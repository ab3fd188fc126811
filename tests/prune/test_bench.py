"""The bench engine end to end on a tiny random LLaVA checkpoint folder with a question file (``checkpoint``,
in conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig

from mmaccel.prune.bench import run_bench
from mmaccel.prune.flops import prefill_flops


def test_bench_writes_one_record_per_method_and_keep(checkpoint, tmp_path):
    folder, questions = checkpoint
    out = tmp_path / "out.json"
    records = run_bench(str(folder), "none,fastv,divprune,holitom", "0.5,0.25", questions, out, max_new_tokens=2)
    assert json.loads(out.read_text()) == records
    keys = [(r["method"], r["keep"]) for r in records]
    assert keys == [
        ("none", 1.0),
        ("fastv", 0.5),
        ("fastv", 0.25),
        ("divprune", 0.5),
        ("divprune", 0.25),
        ("holitom", 0.5),
        ("holitom", 0.25),
    ]
    none, fastv, divprune = records[0], records[2], records[4]
    assert none["visual_tokens"] == none["visual_tokens_kept"] == 64
    assert none["agreement"] == 1.0 and none["flops_ratio"] == 1.0
    assert fastv["visual_tokens_kept"] == divprune["visual_tokens_kept"] == 16
    assert divprune["flops_ratio"] < fastv["flops_ratio"] < 1.0
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["ttft_s"] > 0 for r in records[:5])
    assert "takes no video" in records[-1]["error"]


def test_accuracy_by_kind_splits_the_accuracy_when_every_question_has_a_kind(checkpoint, tmp_path):
    folder, questions = checkpoint
    lines = [json.loads(line) for line in questions.read_text().splitlines()]
    # The answer of the first question is made unmatchable, so its kind is known to score 0.
    lines[0]["answer"] = "nothing-says-this"
    kinds = ["wrong", "other", "other"]
    tagged = folder / "tagged.jsonl"
    tagged.write_text("\n".join(json.dumps({**line, "kind": k}) for line, k in zip(lines, kinds)))
    record = run_bench(str(folder), "none", "0.5", tagged, max_new_tokens=2, batch_size=1)[0]
    assert set(record["accuracy_by_kind"]) == {"wrong", "other"}
    assert record["accuracy_by_kind"]["wrong"] == 0.0
    assert record["accuracy"] == record["accuracy_by_kind"]["other"] * 2 / 3
    untagged = run_bench(str(folder), "none", "0.5", questions, max_new_tokens=2, batch_size=1)[0]
    assert "accuracy_by_kind" not in untagged


def test_batched_ttft_prefills_the_same_requests(checkpoint):
    from mmaccel.prune import prune
    from mmaccel.prune.bench import load_model, read_questions
    from mmaccel.prune.testbed.inputs import build_batch, build_inputs

    folder, questions = checkpoint
    model, processor = load_model(folder)
    items = read_questions(questions)[:2]
    batch = build_batch(processor, items)
    mask = batch["attention_mask"]
    assert mask.shape[0] == 2 and (mask[:, -1] == 1).all() and (mask == 0).any()  # left-padded, lengths differ
    with prune(model, "divprune", keep=0.5), torch.inference_mode():
        together = model(**batch, logits_to_keep=1).logits[:, -1]
        alone = torch.cat([model(**build_inputs(processor, q), logits_to_keep=1).logits[:, -1] for q in items])
    assert torch.allclose(together, alone, atol=1e-4)
    records = run_bench(str(folder), "none,divprune", "0.5", questions, max_new_tokens=1, batch_size=2)
    assert all(r["batch_size"] == 2 and r["batch_ttft_s"] > 0 for r in records)
    assert records[0]["batch_ttft_speedup"] == 1.0  # the unpruned run is its own reference
    # With one method, the none record is that method's unpruned side: the same measurement.
    assert records[0]["batch_ttft_s"] == records[0]["reference_batch_ttft_s"] == records[1]["reference_batch_ttft_s"]
    assert records[1]["batch_ttft_speedup"] == records[1]["reference_batch_ttft_s"] / records[1]["batch_ttft_s"]
    with pytest.raises(ValueError, match="batch_size"):
        run_bench(str(folder), "none", "0.5", questions, batch_size=0)


def test_bench_rejects_bad_arguments(checkpoint):
    folder, questions = checkpoint
    with pytest.raises(ValueError, match="methods"):
        run_bench(str(folder), "fastv,nope", "0.5", questions)
    with pytest.raises(ValueError, match="keeps"):
        run_bench(str(folder), "fastv", "0.5,1.5", questions)
    with pytest.raises(ValueError, match="question_file"):
        run_bench(str(folder), "fastv", "0.5", None)
    with pytest.raises(FileNotFoundError, match="model"):
        run_bench(str(folder / "missing"), "fastv", "0.5", questions)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['nope'\] for fastv"):
        run_bench(str(folder), "fastv", "0.5", questions, params={"fastv": {"nope": 1}})
    with pytest.raises(ValueError, match="tau must be in"):
        run_bench(str(folder), "holitom", "0.5", questions, params={"holitom": {"tau": 2.0}})
    with pytest.raises(ValueError, match="'tome' is not one of the benchmarked"):
        run_bench(str(folder), "fastv", "0.5", questions, params={"tome": {"layer": 1}})


def test_two_settings_of_one_method_are_benchmarked_side_by_side(checkpoint, capsys):
    from mmaccel.cli import main

    folder, questions = checkpoint
    methods = "none,divprune,divprune:proportional=true"
    records = run_bench(str(folder), methods, "0.25", questions, max_new_tokens=2, batch_size=1)
    assert [(r["method"], r.get("params")) for r in records] == [
        ("none", None),
        ("divprune", None),
        ("divprune", {"proportional": True}),
    ]
    # --param applies to every variant of its method; a variant's own value wins.
    records = run_bench(
        str(folder),
        "fastv:layer=1,fastv",
        "0.25",
        questions,
        max_new_tokens=1,
        batch_size=1,
        params={"fastv": {"layer": 3}},
    )
    assert [r.get("params") for r in records] == [None, {"layer": 1}, {"layer": 3}]
    argv = ["bench", "prune", "--model", str(folder), "--questions", str(questions), "--keep", "0.5"]
    assert main([*argv, "--methods", "none,tome:proportional=true", "--batch-size", "1"]) == 0
    assert "| tome proportional=true | 0.5 |" in capsys.readouterr().out
    for bad, message in [
        ("divprune:proportional", "look like name=value"),
        ("nope:x=1", "unknown method 'nope'"),
        ("none:x=1", "'none' takes no parameters"),
        ("divprune:proportional=maybe", "proportional of divprune takes bool"),
        ("divprune:nope=1", r"unknown parameter\(s\) \['nope'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_bench(str(folder), f"none,{bad}", "0.5", questions)


def test_cli_passes_method_parameters(checkpoint, tmp_path, monkeypatch):
    from mmaccel.cli import main

    folder, questions = checkpoint
    seen = {}
    import mmaccel.prune.bench as bench

    real = bench.bench_model

    def spy(*args, **kwargs):
        seen.update(kwargs["params"])
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "bench_model", spy)
    out = tmp_path / "r.json"
    argv = ["bench", "prune", "--model", str(folder), "--questions", str(questions), "--methods", "none,fastv"]
    argv += ["--keep", "0.5", "--param", "fastv:layer=1", "--batch-size", "2", "--json", str(out)]
    assert main(argv) == 0
    assert seen == {"fastv": {"layer": 1}} and len(json.loads(out.read_text())) == 2


def test_flops_formula_matches_a_hand_count():
    config = LlamaConfig(
        vocab_size=10,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    n, d, h, g, k, m = 5, 8, 2, 1, 4, 16
    expected = 2 * n * d * (2 * h * k + 2 * g * k) + 4 * n * n * h * k + 6 * n * d * m + 2 * d * 10
    assert prefill_flops(config, [n]) == expected
    assert np.isclose(prefill_flops(config, [n, n]) - prefill_flops(config, [n]), expected - 2 * d * 10)


def test_bench_prune_cli(checkpoint, tmp_path, capsys):
    from mmaccel.cli import main

    folder, questions = checkpoint
    out = tmp_path / "prune.json"
    args = [
        "bench",
        "prune",
        "--model",
        str(folder),
        "--methods",
        "none,fastv",
        "--keep",
        "0.5",
        "--questions",
        str(questions),
        "--json",
        str(out),
    ]
    assert main(args) == 0
    records = json.loads(out.read_text())
    assert {(r["method"], r["keep"]) for r in records} >= {("fastv", 0.5)}
    assert "fastv" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "missing" / "x.json")]) == 2  # output folder checked first
