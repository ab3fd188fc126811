import pytest
import torch

from mmaccel.image.spatial import HorizontalRepeat, HorizontalSample, RandomInit, VerticalRepeat


def _reference(kind, context, index, uniforms, vocab, width=None, row_end=None, span=None):
    """Position-by-position Python statement of each rule, to check the vectorised versions against."""
    stride = None if width is None else width + (row_end is not None)
    out = torch.empty_like(index)
    for b in range(index.shape[0]):
        n = int(index[b, 0])
        is_end = lambda i: row_end is not None and i % stride == width  # noqa: E731
        known = [i for i in range(n) if not is_end(i)]  # indices of known image tokens
        for k in range(index.shape[1]):
            j, u = int(index[b, k]), float(uniforms[b, k])
            rand = int(vocab[min(int(u * len(vocab)), len(vocab) - 1)])
            last = int(context[b, known[-1]]) if known else rand
            if is_end(j):
                tok = row_end
            elif kind == "random":
                tok = rand
            elif kind == "hrepeat":
                tok = last
            elif kind == "hsample":
                cand = known[-span:]
                tok = int(context[b, cand[-1 - int(u * len(cand))]]) if cand else rand
            else:  # vertical
                row, col = j // stride, j % stride
                above = (row - 1) * stride + col
                tok = int(context[b, above]) if row > 0 and above < n else last
            out[b, k] = tok
    return out


def _make(kind, vocab, width, row_end, span=None):
    if kind == "random":
        return RandomInit(vocab, width, row_end)
    if kind == "hrepeat":
        return HorizontalRepeat(vocab, width, row_end)
    if kind == "hsample":
        return HorizontalSample(vocab, width, row_end, span=span)
    return VerticalRepeat(vocab, width, row_end)


@pytest.mark.parametrize("kind", ["random", "hrepeat", "hsample", "vertical"])
@pytest.mark.parametrize("row_end", [None, 99])
def test_matches_position_by_position_reference(kind, row_end):
    gen = torch.Generator().manual_seed(0)
    width, b, n, k = 5, 6, 40, 7
    vocab = torch.arange(10, 30)  # image ids as a sub-range of a larger vocabulary
    context = torch.randint(10, 30, (b, n), generator=gen)
    # Starts cover: nothing known, part of the first row, a row end, deep in the grid.
    starts = torch.tensor([0, 3, 5, 6, 13, 30])
    index = starts[:, None] + torch.arange(k)
    uniforms = torch.rand(b, k, generator=gen)
    init = _make(kind, vocab, width, row_end, span=width)
    got = init(context, index, uniforms)
    want = _reference(kind, context, index, uniforms, vocab.tolist(), width, row_end, span=width)
    assert got.dtype == torch.long and torch.equal(got, want)


def test_vertical_repeat_on_a_grid():
    # 4-wide grid, rows 0 and 1 known plus 2 tokens of row 2.
    context = torch.arange(100, 110)[None]
    index = torch.arange(10, 16)[None]  # row 2 cols 2-3, row 3 cols 0-3
    out = VerticalRepeat(vocab=200, width=4)(context, index, torch.zeros(1, 6))
    # Rows 2 and 3 copy the row above where it is known (ids 106-109); row 3 cols 2-3 sit under new
    # positions, so they take the token to the left, which for new positions is the last known one.
    assert out.tolist() == [[106, 107, 108, 109, 109, 109]]


def test_row_end_token_fills_row_ends_and_is_skipped():
    width, eol = 3, 7
    # Known: row 0 = (1, 2, 3, eol), row 1 = (4, 5, 6, eol); fill row 2 and its row end.
    context = torch.tensor([[1, 2, 3, eol, 4, 5, 6, eol]])
    index = torch.arange(8, 13)[None]
    vertical = VerticalRepeat(vocab=7, width=width, row_end=eol)(context, index, torch.zeros(1, 5))
    assert vertical.tolist() == [[4, 5, 6, eol, 6]]
    horizontal = HorizontalRepeat(vocab=7, width=width, row_end=eol)(context, index, torch.zeros(1, 5))
    assert horizontal.tolist() == [[6, 6, 6, eol, 6]]  # the last image token, never the row end


def test_horizontal_sample_draws_from_the_last_row_of_known_tokens():
    width = 4
    context = torch.arange(20)[None].expand(500, -1)
    index = torch.full((500, 1), 9)
    uniforms = torch.rand(500, 1, generator=torch.Generator().manual_seed(0))
    out = HorizontalSample(vocab=50, width=width)(context, index, uniforms)
    assert set(out.flatten().tolist()) == {5, 6, 7, 8}  # the last `width` known tokens, all of them


def test_nothing_known_falls_back_to_random_and_follows_uniforms():
    context = torch.zeros(2, 0, dtype=torch.long)
    index = torch.arange(3).expand(2, -1)
    uniforms = torch.tensor([[0.0, 0.5, 0.999], [0.25, 0.5, 0.75]])
    for init in (HorizontalRepeat(8), HorizontalSample(8, span=3), VerticalRepeat(8, width=2), RandomInit(8)):
        assert init(context, index, uniforms).tolist() == [[0, 4, 7], [2, 4, 6]]


def test_same_uniforms_same_tokens_regardless_of_batch():
    gen = torch.Generator().manual_seed(3)
    context = torch.randint(50, (4, 30), generator=gen)
    index = torch.tensor([4, 9, 17, 22])[:, None] + torch.arange(5)
    uniforms = torch.rand(4, 5, generator=gen)
    init = HorizontalSample(50, width=6)
    batch = init(context, index, uniforms)
    alone = init(context[2:3], index[2:3], uniforms[2:3])
    assert torch.equal(batch[2:3], alone)


def test_bad_arguments():
    with pytest.raises(ValueError, match="row_end needs width"):
        HorizontalRepeat(10, row_end=3)
    with pytest.raises(ValueError, match="span"):
        HorizontalSample(10)
    with pytest.raises(ValueError, match="vocab"):
        RandomInit(0)
    with pytest.raises(ValueError, match="uniforms"):
        RandomInit(10)(torch.zeros(1, 4, dtype=torch.long), torch.arange(2)[None], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="index"):
        RandomInit(10)(torch.zeros(2, 4, dtype=torch.long), torch.arange(2)[None], torch.zeros(1, 2))
