"""The shipped speech model: codec shapes, loading, lossless greedy decoding, bad input, atomic CLI outputs."""

import json
import shutil

import pytest
import soundfile
import torch

from mmaccel.audio.codec import HOP, MelCodec, griffin_lim, log_mel
from mmaccel.audio.pipeline import WEIGHTS, SpeechARPipeline
from mmaccel.checkpoint import CheckpointError
from mmaccel.cli import main

TEXTS = ["the red square is left of the star", "the blue ring is under the cube"]


@pytest.fixture(scope="module")
def pipe():
    return SpeechARPipeline.from_pretrained()


def test_codec_round_trip_shapes():
    codec = MelCodec.from_pretrained(WEIGHTS)
    wave = torch.randn(2, HOP * 40) * 0.1
    mel = log_mel(wave)
    codes = codec.encode(mel)
    assert mel.shape == (2, 41, 80) and codes.shape == (2, 41, 4) and int(codes.max()) < 256
    back = codec.decode(codes)
    assert back.shape == mel.shape
    assert griffin_lim(back, iterations=2).shape == (2, 40 * HOP)


def test_shipped_model_generates(pipe):
    out = pipe(TEXTS, "f1", "sjd", seeds=[0, 1], max_steps=40)
    assert len(out.waveforms) == 2 and out.sample_rate == 16000
    for tokens, amap, wave in zip(out.tokens, out.acceptance_maps, out.waveforms):
        assert tokens.shape[1] == 4 and amap.shape == tokens.shape and len(wave) > 0


@pytest.mark.parametrize("spec", ["sjd:window=6", "greedy:window=4:init=random", "lantern:window=4"])
def test_greedy_methods_are_ar(pipe, spec):
    ar = pipe(TEXTS, "m1", "ar", temperature=0.0, max_steps=48)
    other = pipe(TEXTS, "m1", spec, temperature=0.0, max_steps=48)
    if spec.startswith("lantern"):  # relaxed: only the first token of each codebook is bound to match
        assert all(len(t) > 0 for t in other.tokens)
        return
    for a, b in zip(ar.tokens, other.tokens):
        assert torch.equal(a, b)
    assert other.stats.nfe <= ar.stats.nfe


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(texts=""), "empty"),
        (dict(texts=" ,. "), "nothing speakable"),
        (dict(texts="hello world"), "lexicon"),
        (dict(texts=" ".join(["the red square"] * 40)), "maximum"),
        (dict(texts=TEXTS[0], voice="zz"), "voice"),
        (dict(texts=TEXTS[0], method="nope"), "unknown method"),
        (dict(texts=TEXTS[0], method="draft"), "draft model"),
        (dict(texts=TEXTS[0], max_steps=100000), "max_steps"),
    ],
)
def test_bad_input(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder"):
        SpeechARPipeline.from_pretrained(tmp_path / "missing")
    folder = tmp_path / "model"
    shutil.copytree(WEIGHTS, folder, ignore=shutil.ignore_patterns("*.md", "*.png"))
    (folder / "lm.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="lm.safetensors"):
        SpeechARPipeline.from_pretrained(folder)
    shutil.copy(WEIGHTS / "lm.safetensors", folder / "lm.safetensors")
    config = json.loads((folder / "codec_config.json").read_text())
    (folder / "codec_config.json").write_text(json.dumps({**config, "hidden": 8}))
    with pytest.raises(CheckpointError, match="codec.safetensors"):
        SpeechARPipeline.from_pretrained(folder)


def test_cli_writes_three_files_atomically(tmp_path, capsys):
    out = tmp_path / "hello.wav"
    args = [
        "generate",
        "speech",
        "--text",
        TEXTS[0],
        "--method",
        "sjd",
        "--out",
        str(out),
        "--quiet",
        "--max-steps",
        "40",
    ]
    assert main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.json", "hello.wav", "hello_acceptance.png"]
    audio, rate = soundfile.read(out)
    assert rate == 16000 and len(audio) > 0
    assert json.loads((tmp_path / "hello.json").read_text())["method"] == "sjd"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "x.mp3"], ".wav or .flac"),
        (["--out", "/nonexistent/x.wav"], "/nonexistent"),
        (["--out", "x.flac", "--voice", "zz"], "voice"),
        (["--out", "x.wav", "--method", "sjd:window=0"], "window"),
    ],
)
def test_cli_errors_leave_nothing(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "speech", "--text", TEXTS[0], *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmaccel: error:") and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_phoneme_error_rate():
    from mmaccel.audio.recogniser import edit_distance, phoneme_error_rate

    assert edit_distance("kitten", "sitting") == 3
    assert phoneme_error_rate(["ab c"], ["abc d"]) == pytest.approx(1 / 4)


def test_bench_speech_writes_records(tmp_path, monkeypatch, capsys):
    import mmaccel.audio.bench as bench

    monkeypatch.setattr(bench, "espeak_reference", lambda texts, voice: None)  # no espeak-ng in tests
    out = tmp_path / "speech.json"
    args = [
        "bench",
        "speech",
        "--methods",
        "ar,sjd:window=4",
        "--num-utterances",
        "2",
        "--batch-sizes",
        "2",
        "--max-steps",
        "24",
    ]
    assert main([*args, "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["method"] for r in records] == ["ar", "sjd:window=4", "ar (second seed set: noise floor)"]
    for r in records[:2]:
        assert r["step_compression"] > 0 and 0 <= r["per"] and r["ceiling"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["speech.json"]
