"""Question-answer data of the video pruning testbed: short clips of shapes from :mod:`mmaccel.data.scenes`.

Each example is a clip of ``FRAMES`` 64x64 frames on a static dark background (flat or gradient). Every clip
holds shapes of distinct kinds (circle, square, triangle, star) and distinct colours (six):

* one *mover* that slides in a straight line, left, right, up or down, by 40-55% of the frame;
* one *newcomer* that is absent from the first frames and sits still from frame ``arrival`` on;
* zero to two static distractors, present and still in every frame.

No shape ever overlaps another, nor the mover's path, so every shape is fully visible whenever present.
Static background and distractors give HoliTom's static-token merging something real to merge; the
newcomer splits time into a before and an after. One question per clip, the three kinds equally likely,
each answered by one word and needing more than one frame:

* ``which way does the red shape move ?`` -> ``left``
* ``what colour is the new shape ?`` -> ``green`` (the shape that appears)
* ``what colour is the moving shape ?`` -> ``blue``

Shapes are named by colour, not kind: at 16 tokens a frame (16x16 pixels each) a shape is about one token,
and a model this small did not learn to tell kinds apart there within an hour of training (it sat at chance
with kind-named questions); colours it reads off directly, which leaves the temporal part to learn.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmaccel.data.scenes import Scene, Shape, random_shape, render

from .questions import SHAPE_COLOURS, SHAPE_KINDS, build_tokenizer

FRAMES = 6
IMAGE_SIZE = 64
PATCH_SIZE = 8
DIRECTIONS = ("left", "right", "up", "down")
# Unit step on screen (x right, y down) for each direction.
STEPS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
WORDS = (
    "which",
    "way",
    "does",
    "the",
    "move",
    "shape",
    "new",
    "what",
    "colour",
    "is",
    "moving",
    "answer",
    ":",
    "?",
    *DIRECTIONS,
    *SHAPE_COLOURS,
)
MEDIA_TOKENS = ("<image>", "<video>")
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}<video> {% elif item['type'] == 'image' -%}<image> "
    "{% elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}{%- if add_generation_prompt %} answer :{% endif -%}"
)
HELDOUT_SEED = 20_250_602
SIZE_RANGE = (0.22, 0.28)
# The pooled token grid is 4x4 per frame (16 pixels a cell): the mover crosses two to three cells.
TRAVEL_RANGE = (0.4, 0.55)


@dataclasses.dataclass
class Clip:
    """A clip's content: what is drawn in every frame, and the facts the answers come from."""

    background: dict
    still: list[Shape]
    mover: Shape
    direction: str
    travel: float
    newcomer: Shape
    arrival: int
    frames: int = FRAMES

    def mover_center(self, frame: int) -> tuple[float, float]:
        """The mover's centre (x, y in [0, 1], y down) in ``frame``: linear from its start to its end."""
        dx, dy = STEPS[self.direction]
        t = self.travel * frame / (self.frames - 1)
        return (self.mover.center[0] + dx * t, self.mover.center[1] + dy * t)

    def scene(self, frame: int) -> Scene:
        shapes = list(self.still)
        if frame >= self.arrival:
            shapes.append(self.newcomer)
        shapes.append(dataclasses.replace(self.mover, center=self.mover_center(frame)))
        return Scene(shapes=shapes, **self.background)

    def render(self, size: int = IMAGE_SIZE) -> np.ndarray:
        """The clip as uint8 ``[frames, size, size, 3]``."""
        return np.stack([render(self.scene(t), size) for t in range(self.frames)])


def _segment_distance(point: tuple[float, float], start: tuple[float, float], end: tuple[float, float]) -> float:
    p, a, b = np.asarray(point), np.asarray(start), np.asarray(end)
    t = np.clip(np.dot(p - a, b - a) / max(float(np.dot(b - a, b - a)), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def _background(rng: np.random.Generator) -> dict:
    # Dark and muted, so every one of the six shape colours stands out from it.
    first = tuple(int(c) for c in rng.integers(15, 65, 3))
    if rng.random() < 0.5:
        return {"background": first}
    second = tuple(int(c) for c in rng.integers(15, 65, 3))
    return {
        "background": first,
        "background_texture": "gradient",
        "background2": second,
        "gradient_angle": float(rng.uniform(0, 360)),
    }


def make_clip(rng: np.random.Generator, frames: int = FRAMES) -> Clip:
    """A random clip (see the module docstring); deterministic in ``rng``."""
    if frames < 4:
        raise ValueError(f"frames must be >= 4 (the newcomer needs two frames before and after), got {frames}")
    for _ in range(100):
        count = 2 + int(rng.integers(3))  # mover, newcomer, 0-2 distractors
        kinds = [SHAPE_KINDS[i] for i in rng.permutation(len(SHAPE_KINDS))[:count]]
        colours = [SHAPE_COLOURS[i] for i in rng.permutation(len(SHAPE_COLOURS))[:count]]
        direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        travel = float(rng.uniform(*TRAVEL_RANGE))
        mover = random_shape(rng, kind=kinds[0], size_range=SIZE_RANGE, colour=colours[0], texture="solid")
        radius = mover.size / 2
        dx, dy = STEPS[direction]
        # Start so that the whole path stays inside the frame.
        along = [float(rng.uniform(radius, 1 - radius - travel)), float(rng.uniform(radius, 1 - radius))]
        if dx < 0 or dy < 0:
            along[0] = 1 - along[0]
        start = (along[0], along[1]) if dx else (along[1], along[0])
        mover = dataclasses.replace(mover, center=start)
        end = (start[0] + dx * travel, start[1] + dy * travel)
        placed: list[Shape] = []
        for kind, colour in zip(kinds[1:], colours[1:]):
            for _ in range(200):
                shape = random_shape(rng, kind=kind, size_range=SIZE_RANGE, colour=colour, texture="solid")
                r = shape.size / 2
                clear_of_path = _segment_distance(shape.center, start, end) > r + radius + 0.03
                clear_of_rest = all(
                    np.hypot(shape.center[0] - s.center[0], shape.center[1] - s.center[1]) > r + s.size / 2 + 0.03
                    for s in placed
                )
                if clear_of_path and clear_of_rest:
                    placed.append(shape)
                    break
            else:
                break
        if len(placed) == count - 1:
            arrival = int(rng.integers(2, frames - 1))  # absent in frames 0-1 at least, present in the last two
            return Clip(_background(rng), placed[1:], mover, direction, travel, placed[0], arrival, frames)
    raise RuntimeError("could not lay out a clip in 100 tries")  # does not happen with the sizes above


def questions_about(clip: Clip) -> list[tuple[str, str]]:
    """The three questions about ``clip`` (direction, newcomer, mover colour) with their one-word answers."""
    return [
        (f"which way does the {clip.mover.colour} shape move ?", clip.direction),
        ("what colour is the new shape ?", clip.newcomer.colour),
        ("what colour is the moving shape ?", clip.mover.colour),
    ]


def ask(clip: Clip, rng: np.random.Generator) -> tuple[str, str]:
    """One question about ``clip`` and its answer; the three kinds are equally likely."""
    return questions_about(clip)[int(rng.integers(3))]


def make_example(rng: np.random.Generator) -> dict:
    """``{"video": uint8 [FRAMES, 64, 64, 3], "question", "answer", "clip"}``."""
    clip = make_clip(rng)
    question, answer = ask(clip, rng)
    return {"video": clip.render(), "question": question, "answer": answer, "clip": clip}


def question_kind(question: str) -> str:
    """``direction``, ``appears`` or ``moving``: which of the three question templates ``question`` is."""
    if question.startswith("which way"):
        return "direction"
    return "appears" if "new" in question.split() else "moving"


def heldout_questions(count: int = 300, seed: int = HELDOUT_SEED) -> list[dict]:
    """The held-out questions the bench and the model card use (a seed never used in training), each with its
    ``kind`` (:func:`question_kind`) so the bench reports accuracy by question kind."""
    rng = np.random.default_rng(seed)
    return [{**e, "kind": question_kind(e["question"])} for e in (make_example(rng) for _ in range(count))]


def build_processor():
    """A ``LlavaOnevisionProcessor`` for 64x64 frames with the word-level tokenizer; torchvision-free (see
    :mod:`.video_processor`)."""
    from transformers import LlavaOnevisionImageProcessorPil

    from .video_processor import ArrayOnevisionProcessor, ArrayVideoProcessor

    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    # The model is trained on video only; the image processor is there because the processor class needs one.
    image_processor = LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]])
    return ArrayOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(WORDS, MEDIA_TOKENS),
        video_processor=ArrayVideoProcessor(size=size),
        num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_1",
    )
