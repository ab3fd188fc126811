"""The target-side structure mask: it never forbids a token of real data, never leaves a position without a token,
and enforces syntax, vertex order and face order."""

import numpy as np
import torch

from mmaccel.mesh.data import make_dataset
from mmaccel.mesh.grammar import TokenHistoryCache, allowed_tokens
from mmaccel.mesh.tokenizer import MeshVocab, sequence

VOCAB = MeshVocab(128, 9)


def _allowed(rows: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(rows.shape[1] - 1).expand(rows.shape[0], -1)
    return allowed_tokens(rows, positions, VOCAB.levels, VOCAB.eos, VOCAB.size)


def test_every_token_of_real_sequences_is_allowed():
    tokens, labels = make_dataset(27, seed=5)
    length = max(len(t) for t in tokens) + 6
    rows = torch.from_numpy(np.stack([sequence(t, int(c), VOCAB, length) for t, c in zip(tokens, labels)]))
    allowed = _allowed(rows)
    assert allowed.gather(2, rows[:, 1:, None]).all()


def test_no_position_is_left_without_a_token():
    rows = torch.randint(0, VOCAB.size, (64, 60), generator=torch.Generator().manual_seed(0))
    rows[:, 0], rows[:, 1] = VOCAB.class_token(0), VOCAB.bos
    rows[:32, 2:] = torch.randint(120, 128, (32, 58))  # near the top: ties where a strict order would dead-end
    assert _allowed(rows).any(-1).all()


def test_syntax_vertex_order_and_face_order():
    face = [10, 20, 30, 10, 20, 40, 50, 0, 0]
    rows = torch.tensor([[VOCAB.class_token(1), VOCAB.bos, *face, 10, 20, 30, 10, 5, VOCAB.eos, 7]])
    allowed = _allowed(rows)[0]  # allowed[p]: what may sit at position p + 1
    coordinates = torch.arange(VOCAB.size) < VOCAB.levels
    assert torch.equal(allowed[1], coordinates)  # the first token: any coordinate, no eos
    assert torch.equal(allowed[4], coordinates & (torch.arange(VOCAB.size) >= 10))  # vertex 1's z >= vertex 0's
    assert allowed[5, 20] and not allowed[5, 19]  # vertex 1's y: tied z, so >= 20
    assert allowed[6, 31] and not allowed[6, 30]  # vertex 1's x: tied z, y, so > 30 (no degenerate face)
    assert not allowed[7, :10].any() and allowed[7, 10:128].all()  # vertex 2's z >= vertex 0's
    assert not allowed[7, VOCAB.eos]  # no eos inside a face
    next_face = allowed[10]  # slot 0 of face 1: >= the previous face's first token, or eos
    assert not next_face[:10].any() and next_face[10:128].all() and next_face[VOCAB.eos]
    assert not allowed[11, :20].any() and allowed[11, 20]  # face 1 ties face 0 on its first token: y >= 20
    assert not allowed[14, :20].any()  # still tied after 4 tokens: the fifth >= face 0's fifth (20)
    assert torch.equal(allowed[15], coordinates)  # 5 < 20 broke both ties: any coordinate
    assert torch.equal(allowed[16], torch.arange(VOCAB.size) == VOCAB.eos)  # after eos, eos only


def test_strict_orders_fall_back_to_loose_at_the_top():
    top = VOCAB.levels - 1
    rows = torch.tensor([[VOCAB.class_token(0), VOCAB.bos, 5, top, top, 5, top, 0]])
    allowed = _allowed(rows)[0]
    assert allowed[4, top] and allowed[4, 6] and not allowed[4, 5]  # vertex 1's z: 5 would need y or x > 127
    only_top = torch.arange(VOCAB.size) == top
    assert torch.equal(allowed[5], only_top) and torch.equal(allowed[6], only_top)  # nothing strict: the loose 127
    face = [3, 4, 5, 6, 7, 8, 9, 1, 2]
    rows = torch.tensor([[VOCAB.class_token(0), VOCAB.bos, *face, *face[:8], 0]])
    allowed = _allowed(rows)[0]
    assert not allowed[18, 2] and allowed[18, 3]  # a copy of the previous face is refused at its last token


def test_history_cache_records_by_position_and_reorders():
    cache = TokenHistoryCache(8)
    cache.record(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[0, 1, 2], [0, 1, 2]]))
    history = cache.record(torch.tensor([[9], [8]]), torch.tensor([[1], [2]]))
    assert history[:, :3].tolist() == [[1, 9, 3], [4, 5, 8]]
    cache.reorder(torch.tensor([1]))
    assert cache.tokens[:, :3].tolist() == [[4, 5, 8]]
