"""Held-out accuracy and confusion of a mesh classifier, on three sets none of its training shapes come from:

* ``held-out``: its own validation seed (``train_classifier.VAL_SEED``), fresh surface points;
* ``references``: the bench's reference meshes (``mesh.bench.REFERENCE_SEED``), sampled as the bench samples them;
* ``tokenised``: shapes put through the 7-bit tokenizer and decoded, as a generated mesh is.

    python -m mmaccel.mesh.training.eval_classifier --classifier mesh/weights/classifier.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mmaccel.mesh.bench import REFERENCE_SEED
from mmaccel.mesh.classifier import PointNetClassifier
from mmaccel.mesh.data import CLASS_NAMES, NUM_CLASSES, make_dataset, make_meshes
from mmaccel.mesh.model import WEIGHTS_DIR
from mmaccel.mesh.tokenizer import MeshVocab, decode
from mmaccel.mesh.training.train_classifier import VAL_SEED, clouds

TOKENISED_SEED = 424_242


def confusion(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """``[C, C]`` counts, rows the true class, columns the predicted one."""
    return multiclass_confusion_matrix(
        torch.as_tensor(np.asarray(preds)), torch.as_tensor(np.asarray(labels)), NUM_CLASSES
    ).numpy()


@torch.no_grad()
def evaluate(classifier: PointNetClassifier, per_class: int) -> dict[str, np.ndarray]:
    """The confusion on each of the three sets, ``per_class`` shapes of every class in each."""
    x, y = clouds(per_class * NUM_CLASSES, VAL_SEED, 512)
    out = {"held-out": confusion(y.numpy(), classifier.eval()(x).argmax(-1).numpy())}
    references = make_meshes(per_class, REFERENCE_SEED)
    meshes = [m for name in CLASS_NAMES for m in references[name]]
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    out["references"] = confusion(labels, np.array(classifier.embed(meshes)[1]))
    vocab = MeshVocab(128, NUM_CLASSES)
    tokens, labels = make_dataset(per_class * NUM_CLASSES, TOKENISED_SEED, vocab.levels)
    decoded = [decode(np.r_[t, vocab.eos], vocab)[0] for t in tokens]
    out["tokenised"] = confusion(labels, np.array(classifier.embed(decoded)[1]))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier", type=Path, action="append", help="classifier.safetensors (repeatable)")
    p.add_argument("--per-class", type=int, default=80, help="shapes of every class in each set")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for path in a.classifier or [WEIGHTS_DIR / "classifier.safetensors"]:
        print(f"{path}:")
        for name, table in evaluate(PointNetClassifier.from_pretrained(path), a.per_class).items():
            print(f"  {name}: accuracy {np.trace(table) / table.sum():.3f} of {table.sum()}")
            print("    " + " ".join(f"{n[:6]:>6}" for n in ("", *CLASS_NAMES)))
            for i, row in enumerate(table):
                print("    " + f"{CLASS_NAMES[i][:6]:>6} " + " ".join(f"{v:6d}" for v in row))


if __name__ == "__main__":
    main()
