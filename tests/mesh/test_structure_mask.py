"""The heads' layout mask: coordinates inside a face, eos only at a boundary, sort order at a face's first z."""

import torch

from mmaccel.drafting.heads import DraftHeads
from mmaccel.mesh.structure_mask import StructuredHeadsDrafter


def test_allowed_tokens():
    drafter = StructuredHeadsDrafter(DraftHeads(8, 140, num_heads=10), levels=128, eos=129)
    generated = torch.zeros(2, 40, dtype=torch.long)
    generated[0, :5] = torch.tensor([40, 1, 2, 50, 3])  # face 0 starts at z = 40; 5 tokens committed
    generated[1, :3] = torch.tensor([7, 129, 129])  # ended
    allowed = drafter.allowed(generated, torch.tensor([5, 3]), 140)
    row = allowed[0]  # drafts at generated indices 5 .. 14; index 9 starts face 1
    assert row[0, :128].all() and not row[0, 128:].any()  # inside a face: coordinates only
    boundary = row[4]
    assert not boundary[:40].any() and boundary[40:128].all() and boundary[129] and not boundary[128]
    assert (allowed[1] == (torch.arange(140) == 129)).all()  # after eos, eos only
