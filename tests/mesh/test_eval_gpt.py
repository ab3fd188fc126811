"""The mesh GPT's loss split: a vertex's first appearance is new, every later one a copy."""

import numpy as np

from mmaccel.mesh.data import make_dataset
from mmaccel.mesh.model import load_mesh_gpt
from mmaccel.mesh.training.eval_gpt import copy_mask, main, token_kinds


def test_copy_mask_marks_repeated_vertices_only():
    a, b, c, d = [0, 0, 0], [0, 0, 5], [0, 5, 0], [5, 0, 0]
    faces = np.array([a, b, c, a, b, d, a, c, d]).reshape(-1)
    mask = copy_mask(faces).reshape(-1, 3)
    assert mask[:, 0].tolist() == [False, False, False, True, True, False, True, True, True]
    assert (mask == mask[:, :1]).all()  # a vertex's three coordinates share its kind


def test_token_kinds_counts_every_token_once(model_dir, capsys):
    gpt = load_mesh_gpt(model_dir)
    shapes, labels = make_dataset(3, 7, gpt.vocab.levels)
    stats = token_kinds(gpt.model.eval(), gpt.vocab, shapes, labels)
    assert stats["copy_tokens"] + stats["new_tokens"] == sum(len(s) for s in shapes)
    assert stats["eos_tokens"] == 3 and 0.0 <= stats["p_copies_exact"] <= 1.0
    # The slots split the copies: their accuracies, weighted by the copies at each slot, give the copy accuracy.
    copies = [copy_mask(s) for s in shapes]
    counts = [sum(int(c[slot::9].sum()) for c in copies) for slot in range(9)]
    weighted = sum(a * n for a, n in zip(stats["copy_accuracy_by_slot"], counts)) / sum(counts)
    assert abs(weighted - stats["copy_accuracy"]) < 1e-9
    main(["--model", str(model_dir), "--shapes", "2"])
    printed = capsys.readouterr().out
    assert "p_copies_exact" in printed and "copy accuracy by slot" in printed


def test_zero_slots_removes_what_the_slot_table_adds(slots_model_dir, model_dir, capsys):
    import pytest
    import torch

    from mmaccel.mesh.model import with_face_slots

    main(["--model", str(slots_model_dir), "--shapes", "2", "--zero-slots"])
    zeroed = capsys.readouterr().out
    # The same weights without a slot table: a plain Llama carrying them gives the same figures.
    gpt = load_mesh_gpt(slots_model_dir)
    plain = with_face_slots(gpt.model)
    with torch.no_grad():
        plain.slots.weight.zero_()
    shapes, labels = make_dataset(2, 7, gpt.vocab.levels)
    stats = token_kinds(plain.eval(), gpt.vocab, shapes, labels)
    assert f"loss {stats['copy_loss']:.3f}  argmax accuracy {stats['copy_accuracy']:.3f}" in zeroed
    main(["--model", str(slots_model_dir), "--shapes", "2"])
    assert capsys.readouterr().out != zeroed  # the random table did carry something
    with pytest.raises(SystemExit):
        main(["--model", str(model_dir), "--shapes", "2", "--zero-slots"])
    assert "needs a face-slot GPT" in capsys.readouterr().err
