"""Training data of the image pruning testbed: every answer is right for its scene, and none is given away."""

from __future__ import annotations

import numpy as np

from mmaccel.prune.testbed.questions import NUMBERS, build_processor
from mmaccel.prune.testbed.train import example_with_every_question, make_batch


def _truth(scene, question: str) -> str:
    """The answer to ``question`` about ``scene``, worked out from the shapes alone."""
    words = question.split()
    by_kind = {s.kind: s for s in scene.shapes}
    if words[0] == "how":
        return NUMBERS[len(scene.shapes) - 1]
    if words[0] == "what":
        return by_kind[words[4]].colour
    a, b = by_kind[words[2]], by_kind[words[6]]
    return "yes" if a.center[0] < b.center[0] else "no"


def test_every_question_asks_each_colour_the_count_and_every_pair_with_right_answers():
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(60):
        e = example_with_every_question(rng)
        scene, n = e["scene"], len(e["scene"].shapes)
        asked = [(e["question"], e["answer"]), *e["followups"]]
        assert len(asked) == n + 1 + n * (n - 1) // 2
        assert len({q for q, _ in asked}) == len(asked)
        assert all(answer == _truth(scene, q) for q, answer in asked)
        colours = {q.split()[4] for q, _ in asked if q.startswith("what")}
        assert colours == {s.kind for s in scene.shapes}
        pairs = {frozenset((q.split()[2], q.split()[6])) for q, _ in asked if q.startswith("is")}
        assert len(pairs) == n * (n - 1) // 2
        sizes.add(n)
    assert sizes == {1, 2, 3}


def test_every_question_batches_put_the_loss_on_the_answers_only():
    processor = build_processor()
    rng = np.random.default_rng(1)
    examples = [example_with_every_question(rng) for _ in range(4)]
    batch = make_batch(processor, examples)
    tokenizer = processor.tokenizer
    for row, labels, e in zip(batch["input_ids"], batch["labels"], examples):
        answers = [e["answer"], *(a for _, a in e["followups"])]
        assert tokenizer.decode(labels[labels != -100]).split() == [w for a in answers for w in (a, "</s>")]
        assert tokenizer.unk_token_id not in row.tolist()


def test_heldout_questions_carry_the_kind_of_their_template():
    from mmaccel.prune.testbed.questions import heldout_questions

    examples = heldout_questions(40)
    first_word = {"colour": "what", "count": "how", "left-of": "is"}
    assert {e["kind"] for e in examples} == set(first_word)
    assert all(e["question"].split()[0] == first_word[e["kind"]] for e in examples)
