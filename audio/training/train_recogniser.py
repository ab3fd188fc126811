"""Train the CTC phoneme recogniser on held-out espeak-ng speech (a seed set the LM never sees), on a CPU.

    python -m mmaccel.audio.training.train_recogniser --out audio/weights --minutes 8

Half of the utterances are heard through the codec and Griffin-Lim (what generated speech sounds like), so the
recogniser's errors on generated speech measure the LM, not the vocoder. Prints the PER on real and on
codec-resynthesised validation speech.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmaccel.audio.codec import MelCodec, griffin_lim, log_mel
from mmaccel.audio.recogniser import PhonemeRecogniser, phoneme_error_rate
from mmaccel.audio.speech_lm import symbols_for
from mmaccel.audio.training.dataset import RECOGNISER_SEED, VAL_SEED, lexicon_cached, speech_set


def resynthesised(codec: MelCodec, mel: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return log_mel(griffin_lim(codec.decode(codec.encode(mel[None])), iterations=24))[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("audio/weights"))
    parser.add_argument("--codec", type=Path, default=Path("audio/weights"), help="folder of the trained codec")
    parser.add_argument("--cache", type=Path, default=Path("runs/speech_data"))
    parser.add_argument("--utterances", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.time()
    codec = MelCodec.from_pretrained(args.codec)
    args.out.mkdir(parents=True, exist_ok=True)
    symbols = [s for s in symbols_for(lexicon_cached(args.cache)) if not s.startswith("<")]
    index = {s: i + 1 for i, s in enumerate(symbols)}
    data = speech_set(args.utterances, RECOGNISER_SEED, args.cache)
    val = speech_set(200, VAL_SEED, args.cache)
    mels = [resynthesised(codec, m) if i % 2 else m for i, m in enumerate(data.mels)]
    targets = [torch.tensor([index[c] for c in p]) for p in data.phonemes]
    print(f"data ready in {time.time() - start:.0f}s", flush=True)
    model = PhonemeRecogniser(symbols)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    step, deadline = 0, start + args.minutes * 60
    while time.time() < deadline:
        picks = torch.randint(len(mels), (16,), generator=g).tolist()
        batch = torch.nn.utils.rnn.pad_sequence([mels[i] for i in picks], batch_first=True, padding_value=-11.5)
        logp = model(batch).transpose(0, 1)
        lengths = torch.tensor([len(mels[i]) for i in picks])
        loss = F.ctc_loss(
            logp,
            torch.cat([targets[i] for i in picks]),
            lengths,
            torch.tensor([len(targets[i]) for i in picks]),
            zero_infinity=True,
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step} ctc {loss.item():.3f}", flush=True)
    model.eval()
    real = phoneme_error_rate([model.transcribe(m) for m in val.mels[:100]], val.phonemes[:100])
    resyn = phoneme_error_rate([model.transcribe(resynthesised(codec, m)) for m in val.mels[:100]], val.phonemes[:100])
    print(f"done: {step} steps, PER real {real:.3f}, codec+Griffin-Lim {resyn:.3f}", flush=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / "recogniser.safetensors"))
    (args.out / "recogniser_config.json").write_text(
        json.dumps({"symbols": symbols, "hidden": 128}, ensure_ascii=False, indent=1)
    )
    (args.out / "recogniser_train.json").write_text(
        json.dumps({"steps": step, "per_real": real, "per_codec_griffin_lim": resyn, "minutes": args.minutes})
    )


if __name__ == "__main__":
    main()
