"""The speech tab of ``mmaccel demo``: plain AR and a method on the same text and seed, as audio, with each
utterance's frames x codebooks acceptance map."""

from __future__ import annotations

from typing import Any

from mmaccel.demo import DemoSide, DemoTab, check_folder, side_by_side

#: The text box's first value, then examples (the default model's vocabulary: colours, shapes, relations).
TEXTS = (
    "the red square is left of the star",
    "the blue circle is above the green ring",
    "the black cube is behind the white star",
)
#: Speech methods: the Jacobi methods without a coupling (codec streams have none yet; StreamDecoder refuses it).
SPEECH_METHODS = ("lantern", "sjd", "gsd", "typical", "greedy")


def _load(folder: str | None):
    from .pipeline import SpeechARPipeline

    return SpeechARPipeline.from_pretrained(check_folder(folder))


def _compare(
    pipe, condition: str, method: str, params: dict[str, Any], seed: int, progress
) -> tuple[DemoSide, DemoSide]:
    from PIL import Image

    from .acceptance_map import acceptance_image

    spec = ":".join([method, *(f"{k}={v}" for k, v in params.items())])
    decoders = {"ar": pipe.decoder("ar"), method: pipe.decoder(spec)}  # a bad method or value fails here
    voice = pipe.voices[0]
    pipe.prompts([condition], voice)  # an empty or too long text fails before anything runs

    def generate(name: str, kwargs: dict[str, Any]):
        return pipe(condition, voice, seeds=[seed], decoder=decoders[name])

    def present(out):
        forwards, steps = out.stats.nfe, int(out.stats.lengths[0])
        strip = acceptance_image(out.acceptance_maps[0])  # 4 codebook rows: taller rows read on the page
        strip = strip.resize((strip.width, strip.height * 6), Image.NEAREST)
        return (out.sample_rate, out.waveforms[0]), strip, forwards, steps

    return side_by_side(generate, present, method, params, progress)


def demo_tab() -> DemoTab:
    return DemoTab(
        name="speech",
        conditions=list(TEXTS),
        methods=list(SPEECH_METHODS),
        default_method=SPEECH_METHODS[0],
        load=_load,
        compare=_compare,
        output="audio",
        condition_label="text",
        free_text=True,
        notes="Voice m1. Acceptance maps: codebooks as rows, frames as columns; frames committed by one forward "
        "share a colour, black marks a token the model resampled. Counts are codec steps (one frame of all "
        "codebooks, delayed): AR commits one a forward.",
    )
