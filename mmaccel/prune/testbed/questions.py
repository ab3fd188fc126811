"""Question-answer data of the pruning testbed, on scenes from :mod:`mmaccel.data.scenes`.

Each example is a 64x64 scene of one to three distinct shapes (circle, square, triangle, star) in six
well-separated colours on a dark background, with one question whose answer is one word:

* ``what colour is the square ?`` -> ``red``
* ``how many shapes ?`` -> ``two``
* ``is the star left of the circle ?`` -> ``yes``

The tokenizer is word level over exactly this vocabulary, so answers are single tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmaccel.data.scenes import COLOURS, Scene, random_scene, render

IMAGE_SIZE = 64
PATCH_SIZE = 4
SHAPE_KINDS = ("circle", "square", "triangle", "star")
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "white", "purple")
NUMBERS = ("one", "two", "three")
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
WORDS = (
    "what",
    "colour",
    "is",
    "the",
    "how",
    "many",
    "shapes",
    "left",
    "of",
    "answer",
    ":",
    "?",
    "yes",
    "no",
    *SHAPE_KINDS,
    *SHAPE_COLOURS,
    *NUMBERS,
)
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}<image> {% elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}{%- if add_generation_prompt %} answer :{% endif -%}"
)
HELDOUT_SEED = 20_250_601


def make_scene(rng: np.random.Generator) -> Scene:
    scene = random_scene(rng, n_shapes=(1, 3), kinds=SHAPE_KINDS, size_range=(0.22, 0.34), distinct_kinds=True)
    colours = rng.choice(len(SHAPE_COLOURS), size=len(scene.shapes), replace=True)
    shapes = [
        dataclasses.replace(s, colour=SHAPE_COLOURS[c], rgb=COLOURS[SHAPE_COLOURS[c]], texture="solid")
        for s, c in zip(scene.shapes, colours)
    ]
    return Scene(background=(36, 36, 36), shapes=shapes)


def ask(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One question about ``scene`` and its one-word answer; the three kinds are equally likely."""
    return question_of_kind(scene, int(rng.integers(3)), rng)


def question_of_kind(scene: Scene, kind: int, rng: np.random.Generator) -> tuple[str, str]:
    """Kind 0: a named shape's colour; 1: the number of shapes; 2: left-of (the count when fewer than two shapes)."""
    shapes = scene.shapes
    if kind == 1 or (kind == 2 and len(shapes) < 2):
        return "how many shapes ?", NUMBERS[len(shapes) - 1]
    if kind == 0:
        shape = shapes[int(rng.integers(len(shapes)))]
        return f"what colour is the {shape.kind} ?", shape.colour
    a, b = rng.choice(len(shapes), size=2, replace=False)
    left = shapes[a].center[0] < shapes[b].center[0]
    return f"is the {shapes[a].kind} left of the {shapes[b].kind} ?", "yes" if left else "no"


def make_example(rng: np.random.Generator) -> dict:
    scene = make_scene(rng)
    question, answer = ask(scene, rng)
    return {"image": render(scene, IMAGE_SIZE), "question": question, "answer": answer, "scene": scene}


def question_kind(question: str) -> str:
    """``colour``, ``count`` or ``left-of``: which of the three question templates ``question`` is."""
    return {"what": "colour", "how": "count", "is": "left-of"}[question.split()[0]]


def heldout_questions(count: int = 300, seed: int = HELDOUT_SEED) -> list[dict]:
    """The held-out questions the bench and the model card use (a seed never used in training), each with its
    ``kind`` (:func:`question_kind`) so the bench reports accuracy by question kind."""
    rng = np.random.default_rng(seed)
    return [{**e, "kind": question_kind(e["question"])} for e in (make_example(rng) for _ in range(count))]


def build_tokenizer(words: tuple[str, ...], media_tokens: tuple[str, ...] = ("<image>",)):
    """A word-level ``PreTrainedTokenizerFast`` over ``<pad> <s> </s> <unk>``, ``media_tokens`` and ``words``.

    Text is split on whitespace only, so every word (answers included) is one token; prompts pad on the left.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(("<pad>", "<s>", "</s>", "<unk>", *media_tokens, *words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(media_tokens),
        padding_side="left",
    )


def build_processor():
    """A ``LlavaProcessor``: CLIP-style image preprocessing at 64x64 and the word-level tokenizer."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tokenizer = build_tokenizer(WORDS)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
