"""How a tree drafter picks children: a sampled child's reported ``q`` is the distribution it was drawn from."""

from __future__ import annotations

import torch

from mmaccel.drafting.branch import branch_children
from mmaccel.sampling import SampleRNG


def test_sampled_children_of_an_all_but_certain_drafter_report_a_normalised_q():
    """After the first child takes all but 1e-35 of the mass, the second child's q must still sum to 1 (a floor
    on the mass once left it at 1e-5, and the exact rule then over-accepted: a real bug an EAGLE test caught)."""
    q = torch.tensor([[[1.0, 4e-36, 6e-36, 0.0]]]).expand(3, 1, 4).contiguous()
    tokens, q_node = branch_children(q, 3, "sample", SampleRNG([0, 1, 2]))
    torch.testing.assert_close(q_node.sum(-1), torch.ones(3, 3))
    assert bool((tokens[:, 0] == 0).all())
    second = tokens[:, 1]
    assert bool((q_node[torch.arange(3), 1, second] > 0).all())  # each draw has mass under its own q
    assert bool((q_node[:, 2].amax(-1) == 1).all())  # the last child: a deterministic pick, one-hot


def test_sampled_children_are_distinct_and_follow_q():
    q = torch.tensor([0.5, 0.3, 0.2, 0.0]).expand(4000, 1, 4).contiguous()
    tokens, q_node = branch_children(q, 2, "sample", SampleRNG(range(4000)))
    assert bool((tokens[:, 0] != tokens[:, 1]).all())
    freq = torch.bincount(tokens[:, 0], minlength=4).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03)
    torch.testing.assert_close(q_node[:, 0], q[:, 0])
