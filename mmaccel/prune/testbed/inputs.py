"""Model inputs for questions (one request, or a left-padded batch) and the answer text as words.

The bench and the testbeds' training scripts build prompts the same way, so that a testbed is measured on
exactly the prompts it was trained on; this lives with the testbeds, which the bench imports, not the
other way round.
"""

from __future__ import annotations

import string


def build_inputs(processor, item: dict) -> dict:
    """Model inputs for one question (``item`` holds ``question`` and ``image`` or ``video``)."""
    return build_batch(processor, [item])


def build_batch(processor, items: list[dict]) -> dict:
    """Model inputs for ``items`` as one batch, prompts left-padded (all images, or all videos)."""
    kinds = {"video" if "video" in item else "image" for item in items}
    if len(kinds) != 1:
        raise ValueError("questions: a batch mixes images and videos")
    kind = kinds.pop()
    media = {f"{kind}s": [item[kind] for item in items]}
    prompts = [prompt(processor, item) for item in items]
    if len(items) == 1:
        return dict(processor(text=prompts, return_tensors="pt", **media))
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        return dict(processor(text=prompts, return_tensors="pt", padding=True, **media))
    finally:
        tokenizer.padding_side = side


def prompt(processor, item: dict) -> str:
    """The prompt text of one question: the processor's chat template when it has one."""
    kind = "video" if "video" in item else "image"
    messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": item["question"]}]}]
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    token = getattr(processor, f"{kind}_token", f"<{kind}>")
    return f"{token}\n{item['question']}"


def normalise(text: str) -> list[str]:
    """``text`` as lower-case words without punctuation, the form answers are compared in."""
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()
