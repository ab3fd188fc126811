"""The speech modality's :class:`mmaccel.sample.Sampler`: a batch of :class:`SpeechARPipeline`, one WAV each.

WAVs are 32-bit float (soundfile's ``FLOAT`` subtype): the file holds the waveform the pipeline made, bit for bit,
so ``--npz`` (read back from the files) holds it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .pipeline import SpeechARPipeline


def read_wave(path: str | Path, rate: int | None = None) -> np.ndarray:
    """A sound file as float32 mono ``[L]``; an unreadable file, or one at a sample rate other than ``rate``
    (when given), raises ValueError naming it."""
    import soundfile

    try:
        wave, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, soundfile.LibsndfileError) as err:
        raise ValueError(f"cannot read audio file {str(path)!r}: {err}") from None
    if rate is not None and file_rate != rate:
        raise ValueError(f"audio file {str(path)!r} is at {file_rate} Hz; the recogniser takes {rate} Hz")
    return wave.mean(1) if wave.shape[1] > 1 else wave[:, 0]


class SpeechSampler:
    """Generates batches of :class:`SpeechARPipeline` with one method, voice and sampling settings; conditions are
    texts and sample ``i`` of a batch uses ``seeds[i]``."""

    suffix = ".wav"

    def __init__(self, pipe: SpeechARPipeline, spec: str, voice: str, max_steps: int | None, **sampling: Any):
        from mmaccel.sampling import SamplingConfig

        self.pipe, self.spec, self.voice, self.max_steps = pipe, spec, voice, max_steps
        self.sampling = SamplingConfig(temperature=sampling["temperature"], top_k=sampling.get("top_k"))
        pipe.decoder(spec, self.sampling)  # a bad method or parameter fails before the folder is touched

    def generate(self, conditions: Sequence[Any], seeds: Sequence[int]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        out = self.pipe(
            list(conditions),
            self.voice,
            seeds=list(seeds),
            max_steps=self.max_steps,
            decoder=self.pipe.decoder(self.spec, self.sampling),
        )
        stats = out.stats
        results = []
        for b, wave in enumerate(out.waveforms):
            steps = int(stats.lengths[b])
            forwards = int(stats.accept_step[b, :steps].max()) + 1
            info = {
                "forwards": forwards,
                "accepted_length": steps / forwards,
                "steps": steps,
                "frames": len(out.tokens[b]),
                "seconds": len(wave) / out.sample_rate,
                "batch_nfe": stats.nfe,
            }
            results.append((wave, info))
        return results

    def save(self, media: np.ndarray, path: Path) -> None:
        import soundfile

        from .codec import SAMPLE_RATE

        soundfile.write(str(path), media, SAMPLE_RATE, format="WAV", subtype="FLOAT")
