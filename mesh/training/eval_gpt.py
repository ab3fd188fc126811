"""Where the mesh GPT's held-out loss sits: coordinates that copy a vertex already written, against new ones.

A closed mesh in the face-list layout writes each vertex once per face it is in, so most coordinate tokens are
copies of a vertex written before; a copy that is off by one bin leaves a stray vertex and two boundary edges, and
the mesh is not watertight. This prints, teacher forced on the GPT's held-out shapes (``train_gpt.VAL_SEED``),
the mean loss and the argmax accuracy of each kind of token:

* ``copy``: the three coordinates of a vertex that an earlier face (or an earlier corner) already wrote;
* ``new``: the coordinates of a vertex written for the first time;
* ``eos``: the end token after the last face;

``copy_accuracy_by_slot``, the copies' argmax accuracy at each of a face's 9 slots (corner, then coordinate
``z y x``): which coordinate of a repeated vertex the GPT gets wrong; and ``p_copies_exact``, the mean over
shapes of the argmax-correct share of copies raised to the number of copies a shape holds: how often a shape's
copies would all come out right if the errors were independent.

    python -m mmaccel.mesh.training.eval_gpt --model mesh/weights

``--zero-slots`` zeroes a face-slot GPT's slot table first (:class:`~mmaccel.models.slot_llama.SlotLlama`): how much
of its accuracy the slots carry.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mmaccel.mesh.data import make_dataset
from mmaccel.mesh.model import load_mesh_gpt
from mmaccel.mesh.tokenizer import TOKENS_PER_FACE, sequence
from mmaccel.mesh.training.train_gpt import VAL_SEED
from mmaccel.models.slot_llama import SlotLlama


def copy_mask(face_tokens: np.ndarray) -> np.ndarray:
    """``[N]`` bools over a shape's face tokens: True where the token's vertex was already written before it."""
    vertices = face_tokens.reshape(-1, 3)
    _, first = np.unique(vertices, axis=0, return_index=True)
    new = np.zeros(len(vertices), dtype=bool)
    new[first] = True
    return np.repeat(~new, 3)


@torch.no_grad()
def token_kinds(model, vocab, shapes: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Loss and argmax accuracy by token kind over ``shapes``; see the module docstring."""
    nll = {"copy": [], "new": [], "eos": []}
    hit = {"copy": [], "new": [], "eos": []}
    exact, slot_hits = [], [[] for _ in range(TOKENS_PER_FACE)]
    for tokens, label in zip(shapes, labels):
        x = torch.from_numpy(sequence(tokens, int(label), vocab))[None]
        logits = model(input_ids=x[:, :-1]).logits[0, 1:].float()  # position 0 (the class) always predicts bos
        target = x[0, 2:]
        loss = torch.nn.functional.cross_entropy(logits, target, reduction="none").numpy()
        right = (logits.argmax(-1) == target).numpy()
        copies = copy_mask(tokens)
        kinds = {"copy": np.flatnonzero(copies), "new": np.flatnonzero(~copies), "eos": np.array([len(tokens)])}
        for kind, at in kinds.items():
            nll[kind].append(loss[at])
            hit[kind].append(right[at])
        exact.append(right[kinds["copy"]].mean() ** len(kinds["copy"]))
        for slot in range(TOKENS_PER_FACE):
            slot_hits[slot].append(right[kinds["copy"][kinds["copy"] % TOKENS_PER_FACE == slot]])
    out = {}
    for kind in nll:
        out[f"{kind}_tokens"] = int(sum(len(v) for v in nll[kind]))
        out[f"{kind}_loss"] = float(np.concatenate(nll[kind]).mean())
        out[f"{kind}_accuracy"] = float(np.concatenate(hit[kind]).mean())
    out["p_copies_exact"] = float(np.mean(exact))
    out["copy_accuracy_by_slot"] = [float(np.concatenate(h).mean()) for h in slot_hits]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped mesh model)")
    p.add_argument("--shapes", type=int, default=96, help="held-out shapes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--zero-slots", action="store_true", help="zero the face-slot table first (a SlotLlama)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    gpt = load_mesh_gpt(a.model)
    if a.zero_slots:
        if not isinstance(gpt.model, SlotLlama):
            p.error("--zero-slots needs a face-slot GPT (gpt_config.json with slot_period)")
        with torch.no_grad():
            gpt.model.slots.weight.zero_()
    shapes, labels = make_dataset(a.shapes, VAL_SEED, gpt.vocab.levels)
    stats = token_kinds(gpt.model.eval(), gpt.vocab, shapes, labels)
    for kind in ("copy", "new", "eos"):
        print(
            f"{kind}: {stats[f'{kind}_tokens']} tokens  loss {stats[f'{kind}_loss']:.3f}  "
            f"argmax accuracy {stats[f'{kind}_accuracy']:.3f}"
        )
    slots = "  ".join(
        f"{corner}{'zyx'[axis]} {stats['copy_accuracy_by_slot'][3 * corner + axis]:.3f}"
        for corner in range(3)
        for axis in range(3)
    )
    print(f"copy accuracy by slot (corner, coordinate): {slots}")
    print(f"p_copies_exact {stats['p_copies_exact']:.4f} (all of a shape's copies right, errors independent)")


if __name__ == "__main__":
    main()
