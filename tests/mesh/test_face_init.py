"""The face-structure Jacobi initialisation: fan-sharing copies, chains inside one fill, eos, sort order."""

import torch

from mmaccel.mesh.face_init import FaceInit

INIT = FaceInit(levels=128, eos=129)


def test_copies_the_previous_faces_shared_vertices():
    prev = torch.arange(10, 19)[None]  # one face: v0 = 10 11 12, v1 = 13 14 15, v2 = 16 17 18
    context = torch.cat([prev, torch.zeros(1, 20, dtype=torch.long)], 1)
    index = torch.arange(9, 18)[None]
    out = INIT(context, index, torch.zeros(1, 9))
    assert out.tolist() == [[10, 11, 12, 16, 17, 18, 16, 17, 18]]  # v0 <- v0, v1 <- v2, v2 <- v2


def test_chains_through_positions_of_the_same_fill_and_draws_the_first_face():
    context = torch.zeros(2, 40, dtype=torch.long)
    context[1, :9] = torch.arange(20, 29)
    index = torch.stack([torch.arange(0, 27), torch.arange(9, 36)])
    u = torch.full((2, 27), 0.5)
    out = INIT(context, index, u)
    assert (out[0, :9] == 64).all()  # no previous face: uniform over the 128 bins
    assert out[0, 9:].eq(64).all()  # copies of the drawn first face
    assert out[1, 9:18].tolist() == out[1, 0:9].tolist() == [20, 21, 22, 26, 27, 28, 26, 27, 28]
    first_vertex = out[1].view(3, 9)[:, :3]
    assert (first_vertex == first_vertex[0]).all()  # a face's first vertex never drops below the last one's


def test_after_eos_everything_is_eos_and_eos_is_never_copied_as_a_coordinate():
    context = torch.zeros(2, 30, dtype=torch.long)
    context[0, 9] = 129  # ended after one face
    context[1, :9] = torch.tensor([1, 2, 3, 129, 5, 6, 7, 8, 9])  # an eos in a face (garbage) with no end after it
    out = INIT(context, torch.stack([torch.arange(10, 19), torch.arange(9, 18)]), torch.zeros(2, 9))
    assert (out[0] == 129).all()
    assert (out[1] < 128).all() or (out[1] == 129).all()
