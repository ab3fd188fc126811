"""The mesh classifier's held-out report: confusion counts over the three sets, printed per classifier."""

import numpy as np
import torch

from mmaccel.mesh.classifier import PointNetClassifier
from mmaccel.mesh.data import NUM_CLASSES
from mmaccel.mesh.training.eval_classifier import confusion, evaluate, main


def test_confusion_counts_rows_as_true_classes():
    table = confusion(np.array([0, 0, 1, 8]), np.array([0, 7, 1, 8]))
    assert table.sum() == 4 and table[0, 7] == 1 and np.trace(table) == 3


def test_every_set_holds_each_class_equally(tmp_path, capsys):
    torch.manual_seed(0)
    classifier = PointNetClassifier(NUM_CLASSES, width=16)
    tables = evaluate(classifier, per_class=2)
    assert sorted(tables) == ["held-out", "references", "tokenised"]
    for table in tables.values():
        assert table.sum(1).tolist() == [2] * NUM_CLASSES
    classifier.save(tmp_path)
    main(["--classifier", str(tmp_path / "classifier.safetensors"), "--per-class", "1"])
    printed = capsys.readouterr().out
    assert printed.count("accuracy") == 3
