"""``mmaccel bench speech``: every method side by side on the same texts and seeds, at batch 1 and batch B."""

from __future__ import annotations

import random
import time
from typing import Any

import torch

from mmaccel.sampling import SamplingConfig

from .codec import log_mel
from .data import phonemize, sentence
from .metrics import frechet, mel_cepstral_distortion, token_agreement
from .pipeline import SpeechARPipeline
from .recogniser import PhonemeRecogniser, phoneme_error_rate

BENCH_SEED = 4


def bench_texts(n: int) -> list[str]:
    rng = random.Random(BENCH_SEED)
    return [sentence(rng) for _ in range(n)]


def forward_ratio(pipe: SpeechARPipeline, window: int, repeats: int = 20, batch: int = 1) -> float:
    """t(1) / t(L+1): one step forward against one window verification forward, after a prompt."""
    streams = pipe.lm.streams
    prompt = pipe.prompts(bench_texts(batch), pipe.voices[0])
    k = streams.num_streams

    def cost(width: int) -> float:
        cache = streams.new_cache(batch, int(prompt.lengths.max()) + 64)
        streams.prefill(prompt, cache)
        tokens = torch.zeros(batch, width, k, dtype=torch.long)
        positions = prompt.lengths[:, None] + torch.arange(width)
        streams.forward(tokens, positions, cache)
        start = time.perf_counter()
        for _ in range(repeats):
            streams.forward(tokens, positions, cache)
        return (time.perf_counter() - start) / repeats

    return cost(1) / cost(window + 1)


class Judge:
    """PER and Frechet features from the shipped CTC recogniser (mean-pooled states, one vector an utterance)."""

    def __init__(self, pipe: SpeechARPipeline, folder):
        self.recogniser = PhonemeRecogniser.from_pretrained(folder)
        self.lexicon = pipe.lexicon

    @torch.no_grad()
    def per(self, waves, texts) -> float:
        hyps = [self.recogniser.transcribe(log_mel(torch.from_numpy(w)[None])[0]) for w in waves]
        return phoneme_error_rate(hyps, [phonemize(t, self.lexicon) for t in texts])

    @staticmethod
    @torch.no_grad()
    def mcd(waves, reference) -> float | None:
        """Mean MCD (dB, DTW-aligned) against the espeak-ng reference speech of the same texts (None without it)."""
        if reference is None:
            return None
        mels = [log_mel(torch.from_numpy(w)[None])[0].double().numpy() for w in (*waves, *reference)]
        pairs = zip(mels[: len(waves)], mels[len(waves) :])
        return float(sum(mel_cepstral_distortion(a, b) for a, b in pairs) / len(waves))

    @torch.no_grad()
    def features(self, waves):
        feats = [self.recogniser.features(log_mel(torch.from_numpy(w)[None])).mean(1)[0] for w in waves]
        return torch.stack(feats).double().numpy()


def run(
    pipe: SpeechARPipeline,
    specs: list[str],
    num_utterances: int,
    batch_sizes: list[int],
    voice: str = "m1",
    temperature: float = 1.0,
    top_k: int | None = None,
    max_steps: int | None = None,
) -> list[dict[str, Any]]:
    texts = bench_texts(num_utterances)
    reference = espeak_reference(texts, voice)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k)
    seeds = list(range(num_utterances))
    records: list[dict[str, Any]] = []
    for batch in batch_sizes:
        results = {}
        for spec in ["ar", *[s for s in specs if s != "ar"]]:
            decoder = pipe.decoder(spec, sampling)
            waves, tokens, nfe, steps, wall = [], [], 0, 0, 0.0
            for i in range(0, num_utterances, batch):
                out = pipe(
                    texts[i : i + batch], voice, decoder=decoder, seeds=seeds[i : i + batch], max_steps=max_steps
                )
                waves += out.waveforms
                tokens += out.tokens
                nfe += out.stats.nfe
                steps += int(out.stats.lengths.sum())
                wall += out.stats.wall_s
            results[spec] = (waves, tokens, nfe, steps, wall, decoder)
        ar_waves, ar_tokens, ar_nfe, _, ar_wall, _ = results["ar"]
        # The noise floor: AR on a second seed set, against AR on the first.
        floor = []
        for i in range(0, num_utterances, batch):
            out = pipe(
                texts[i : i + batch],
                voice,
                decoder=pipe.decoder("ar", sampling),
                seeds=[s + 10_000 for s in seeds[i : i + batch]],
                max_steps=max_steps,
            )
            floor += out.waveforms
        judge = Judge(pipe, pipe.folder)
        ar_features = judge.features(ar_waves)
        for spec, (waves, tokens, nfe, steps, wall, decoder) in results.items():
            window = decoder.drafter.window if decoder.drafter is not None else 0
            compression = ar_nfe / nfe
            ratio = forward_ratio(pipe, window, batch=batch) if window else 1.0
            records.append(
                {
                    "method": spec,
                    "batch_size": batch,
                    "nfe": nfe,
                    "tokens": steps * pipe.lm.streams.num_streams,
                    "steps": steps,
                    "step_compression": compression,
                    "wall_s": wall,
                    "speedup": ar_wall / wall,
                    "ceiling": compression * ratio,
                    "t1_over_tL1": ratio,
                    "token_agreement_with_ar": token_agreement(tokens, ar_tokens),
                    "per": judge.per(waves, texts),
                    "frechet_vs_ar": frechet(judge.features(waves), ar_features) if spec != "ar" else 0.0,
                    "mcd_vs_espeak_db": judge.mcd(waves, reference),
                }
            )
        records.append(
            {
                "method": "ar (second seed set: noise floor)",
                "batch_size": batch,
                "per": judge.per(floor, texts),
                "frechet_vs_ar": frechet(judge.features(floor), ar_features),
                "mcd_vs_espeak_db": judge.mcd(floor, reference),
            }
        )
    if reference is not None:  # the recogniser's own PER on real espeak-ng speech of the same texts
        records.append({"method": "espeak-ng reference speech", "per": judge.per(reference, texts)})
    return records


def espeak_reference(texts: list[str], voice: str):
    """espeak-ng speaking ``texts`` (None where espeak-ng is not installed)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        return None
    from .data import speak

    return [speak(t, voice, 50, 190) for t in texts]


def format_table(records: list[dict[str, Any]]) -> str:
    cols = (
        "method",
        "batch_size",
        "nfe",
        "step_compression",
        "speedup",
        "ceiling",
        "token_agreement_with_ar",
        "per",
        "frechet_vs_ar",
        "mcd_vs_espeak_db",
    )
    lines = [" | ".join(cols)]
    for r in records:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(" | ".join(cells))
    return "\n".join(lines)
