"""``mmaccel eval speech``: PER of a sample folder through the shipped CTC recogniser, and a Fréchet distance to a
reference set in the recogniser's feature space (the speech bench's ``Judge``), registered through the
``mmaccel.eval`` entry-point group."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac")

EXAMPLES = """examples:
  mmaccel eval speech --samples speech/                       # texts from speech/samples.json
  mmaccel eval speech --samples speech/ --texts sentences.txt --real reference_speech/ --json per.json
"""


def audio_files(folder: Path, flag: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{flag} {str(folder)!r} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
    return files


def sample_texts(folder: Path, files: list[Path], texts_file: str | None) -> list[str]:
    """The text each file says: line i of ``--texts`` for file i, else the condition ``samples.json`` records."""
    if texts_file is not None:
        from mmaccel.sample_cli import read_prompt_file

        try:
            texts = read_prompt_file(texts_file)
        except ValueError as err:
            raise ValueError(str(err).replace("--prompt-file", "--texts")) from None
        if len(texts) != len(files):
            raise ValueError(f"--texts has {len(texts)} lines for {len(files)} audio files; give one a line per file")
        return texts
    record = folder / "samples.json"
    if not record.is_file():
        raise ValueError(f"--samples {str(folder)!r} has no samples.json; give --texts (one line per audio file)")
    try:
        by_file = {s["file"]: s["condition"] for s in json.loads(record.read_text())["samples"].values()}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read {record}: {err}") from None
    missing = [f.name for f in files if not isinstance(by_file.get(f.name), str)]
    if missing:
        raise ValueError(f"{record} records no text for {', '.join(missing[:3])}; give --texts")
    return [by_file[f.name] for f in files]


def _eval(args: argparse.Namespace) -> int:
    import types

    import torch

    from mmaccel.eval.cli import print_record
    from mmaccel.eval.generative import fid_from_features
    from mmaccel.io import check_writable

    from .bench import Judge
    from .codec import SAMPLE_RATE
    from .pipeline import WEIGHTS
    from .sampler import read_wave

    if args.json:
        check_writable(args.json)
    folder = Path(args.samples)
    files = audio_files(folder, "--samples")
    texts = sample_texts(folder, files, args.texts)
    real = audio_files(Path(args.real), "--real") if args.real is not None else None
    if real is not None and (len(real) < 2 or len(files) < 2):
        raise ValueError(f"a Frechet distance needs 2 or more files a set: --real {len(real)}, --samples {len(files)}")
    model = Path(args.model) if args.model is not None else WEIGHTS
    lexicon_path = model / "lexicon.json"
    if not lexicon_path.is_file() or not (model / "recogniser.safetensors").is_file():
        raise FileNotFoundError(f"--model {str(model)!r} holds no lexicon.json and recogniser.safetensors")
    judge = Judge(types.SimpleNamespace(lexicon=json.loads(lexicon_path.read_text())), model)
    waves = [read_wave(f, SAMPLE_RATE) for f in files]
    record: dict = {"samples": str(folder), "num_samples": len(files), "per": judge.per(waves, texts)}
    if real is not None:
        real_feats = torch.from_numpy(judge.features([read_wave(f, SAMPLE_RATE) for f in real]))
        fake_feats = torch.from_numpy(judge.features(waves))
        record.update(real=str(args.real), num_real=len(real), frechet=fid_from_features(real_feats, fake_feats))
    print(f"speech: {len(files)} files in {folder}; PER through the recogniser of {model}")
    print_record(record, ("per", "frechet"), args.json)
    return 0


def register(sub) -> None:
    from mmaccel.eval.cli import add_eval_parser

    help = "speech sample folder: phoneme error rate (CTC recogniser) and Frechet distance to a reference set"
    e = add_eval_parser(sub, "speech", help, EXAMPLES)
    e.add_argument("--samples", required=True, help="a folder of .wav/.flac files (e.g. from mmaccel sample speech)")
    e.add_argument("--texts", default=None, help="one text a line, line i for file i (default: samples.json's)")
    e.add_argument("--real", default=None, help="a reference folder of audio files, for the Frechet distance")
    e.add_argument("--model", default=None, help="folder of recogniser.safetensors, lexicon.json (default: shipped)")
    e.set_defaults(func=_eval)
