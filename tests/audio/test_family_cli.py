"""``mmaccel generate speech --family NAME --model DIR`` on save_pretrained folders of tiny random real-family
models (with their own codecs): it writes the WAV, the acceptance map and the stats, and refuses bad folders."""

import json

import pytest
import soundfile
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import DacConfig, DacModel, DiaTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from mmaccel.audio.csm import tiny_csm
from mmaccel.audio.dia import tiny_dia
from mmaccel.audio.families import FamilySpeech
from mmaccel.audio.moshi import tiny_moshi
from mmaccel.audio.musicgen_text import tiny_musicgen_text
from mmaccel.cli import main

WORDS = ["[UNK]", "[PAD]", "[", "]", "0", "1", "hello", "world", "soft", "piano"]


def word_tokenizer():
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("families")
    tiny_musicgen_text().save_pretrained(root / "musicgen")
    word_tokenizer().save_pretrained(root / "musicgen")
    tiny_csm().save_pretrained(root / "csm")
    word_tokenizer().save_pretrained(root / "csm")
    tiny_moshi().save_pretrained(root / "moshi")
    word_tokenizer().save_pretrained(root / "moshi")
    tiny_dia().save_pretrained(root / "dia")
    DiaTokenizer().save_pretrained(root / "dia")
    torch.manual_seed(0)
    dac = DacConfig(
        encoder_hidden_size=4,
        downsampling_ratios=[2, 2],
        decoder_hidden_size=8,
        n_codebooks=4,
        codebook_size=16,
        codebook_dim=4,
        sampling_rate=800,
    )
    DacModel(dac).save_pretrained(root / "dia" / "dac")
    yield root
    hf_logging.set_verbosity(level)


@pytest.mark.parametrize("family", ["musicgen", "csm", "dia", "moshi"])
def test_generate_family_writes_three_files(folders, tmp_path, family):
    out = tmp_path / "hello.wav"
    args = ["generate", "speech", "--family", family, "--model", str(folders / family), "--text", "hello world"]
    assert main([*args, "--method", "sjd:window=4", "--max-steps", "10", "--out", str(out), "--quiet"]) == 0
    wave, rate = soundfile.read(out)
    assert rate == 800 and len(wave) > 0
    assert (tmp_path / "hello_acceptance.png").is_file()
    assert json.loads((tmp_path / "hello.json").read_text())["method"] == "sjd:window=4"


@pytest.mark.parametrize("family", ["musicgen", "csm", "dia", "moshi"])
def test_family_greedy_methods_are_ar(folders, family):
    pipe = FamilySpeech.from_pretrained(family, folders / family)
    texts = ["hello world", "soft piano hello world"]
    ar = pipe(texts, method="ar", temperature=0.0, max_steps=12)
    spec = pipe(texts, method="sjd:window=4", temperature=0.0, max_steps=12)
    for a, b in zip(ar.tokens, spec.tokens):
        assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["musicgen", "dia"])
def test_relaxed_rules_read_the_family_codec(folders, family):
    """LANTERN and GSD take their neighbourhoods from the family's own codec (EnCodec, DAC)."""
    pipe = FamilySpeech.from_pretrained(family, folders / family)
    table = pipe.tables()
    assert table.shape[:2] == (pipe.streams.num_streams, pipe.streams.vocab_size)
    for spec in ("lantern:window=4", "gsd:window=4"):
        out = pipe(["hello world"], method=spec, seeds=[0], max_steps=10)
        assert out.tokens[0].shape[1] == pipe.streams.num_streams


@pytest.mark.parametrize(
    "family, folder, extra, message",
    [
        ("csm", "musicgen", [], "holds a 'musicgen' checkpoint, not 'csm'"),
        ("musicgen", None, [], "needs --model"),
        ("csm", "csm", ["--method", "lantern"], "lantern"),
        ("csm", "csm", ["--voice", "m1"], "speaker number"),
        ("moshi", "moshi", ["--voice", "m1"], "moshi has no voices"),
        ("moshi", "moshi", ["--method", "mc-sjd"], "couplings do not apply"),
        ("csm", "csm", ["--method", "sjd:init=sample"], "does not expose"),
        ("moshi", "csm", [], "holds a 'csm' checkpoint, not 'moshi'"),
        ("musicgen", "nowhere", [], "config.json"),
    ],
)
def test_family_bad_input(folders, tmp_path, capsys, family, folder, extra, message):
    args = ["generate", "speech", "--family", family, "--text", "hello", "--out", str(tmp_path / "x.wav"), *extra]
    if folder is not None:
        args += ["--model", str(folders / folder)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_dia_needs_its_codec(folders, tmp_path):
    (tmp_path / "dia").mkdir()
    for f in (folders / "dia").iterdir():
        if f.is_file():
            (tmp_path / "dia" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FileNotFoundError, match="DAC"):
        FamilySpeech.from_pretrained("dia", tmp_path / "dia")
