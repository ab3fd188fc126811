"""The shipped default mesh model: GPT, draft heads and classifier load from mesh/weights and generate."""

import torch

from mmaccel.mesh.classifier import PointNetClassifier
from mmaccel.mesh.data import CLASS_NAMES
from mmaccel.mesh.model import WEIGHTS_DIR
from mmaccel.mesh.pipeline import MeshARPipeline


def test_shipped_model_generates_with_xspec_and_matches_ar_greedily():
    pipe = MeshARPipeline.from_pretrained()
    assert pipe.heads is not None and pipe.class_names == CLASS_NAMES
    ar = pipe(["cone", "box"], method="ar", max_faces=3, temperature=0.0, progress=False)
    xspec = pipe(["cone", "box"], method="xspec", max_faces=3, temperature=0.0, progress=False)
    assert torch.equal(ar.tokens, xspec.tokens)
    assert sum(s["steps"] for s in xspec.stats) < sum(s["steps"] for s in ar.stats)
    assert all(len(m.faces) > 0 for m in xspec.meshes)


def test_shipped_classifier_loads():
    classifier = PointNetClassifier.from_pretrained(WEIGHTS_DIR / "classifier.safetensors")
    assert classifier.num_classes == len(CLASS_NAMES)
