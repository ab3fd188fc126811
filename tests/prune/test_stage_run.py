"""The pure pieces under the pruning session: a stage run fresh and reused, the masks, the package layers."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from mmaccel.prune.base import Choice, Stage
from mmaccel.prune.masks import decode_mask, prefill_mask
from mmaccel.prune.stage_run import PromptTokens, run_fresh, run_reused


def _merge_first_into_last(inp) -> Choice:
    """Keeps every other visual token; the first visual token is merged into the last kept one."""
    vis = inp.visual
    keep = vis[1::2]
    return Choice(
        keep=keep,
        src=torch.stack([vis[0], keep[-1]]),
        dest=torch.stack([keep[-1], keep[-1]]),
        weight=torch.tensor([0.5, 0.5]),
        absorbed=vis[:1],
        absorber=keep[-1:],
    )


def _prompt() -> tuple[torch.Tensor, PromptTokens]:
    torch.manual_seed(0)
    hidden = torch.randn(2, 10, 4)
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[1, :2] = False  # the second prompt is left-padded
    visual = torch.zeros(2, 10, dtype=torch.bool)
    visual[0, 1:7] = True
    visual[1, 3:7] = True
    return hidden, PromptTokens(padding, visual, [[], []])


def test_a_reused_choice_keeps_the_same_slots_and_appends_the_new_tokens():
    hidden, prompt = _prompt()
    stage = Stage(layer=0, select=_merge_first_into_last)
    out, result = run_fresh(stage, hidden, None, prompt, keep=0.5, final_norm=lambda x: x)
    assert result.kept[0].tolist() == [0, 2, 4, 6, 7, 8, 9]
    assert result.valid[1].tolist() == [False, True, True, True, True, True, True]  # a slot evening out lengths
    assert torch.allclose(out[0, 3], (hidden[0, 1] + hidden[0, 6]) / 2)  # column 6 absorbed column 1
    assert torch.allclose(result.log_size[0, 3], torch.tensor(2.0).log())
    longer = torch.cat([hidden, torch.randn(2, 2, 4)], dim=1)
    again, reused = run_reused(result, longer, None)
    assert torch.equal(again[:, :-2], out) and torch.equal(again[:, -2:], longer[:, -2:])
    assert torch.equal(reused.kept[:, :-2], result.kept) and reused.kept[:, -2:].tolist() == [[10, 11]] * 2
    assert torch.equal(reused.log_size[:, :-2], result.log_size) and (reused.log_size[:, -2:] == 0).all()


def test_a_second_stage_starts_from_the_first_ones_slots():
    hidden, prompt = _prompt()
    keep_first = Stage(layer=1, select=lambda inp: Choice(keep=inp.visual[:1]))
    out, first = run_fresh(Stage(layer=0, select=_merge_first_into_last), hidden, None, prompt, keep=0.5, final_norm=id)
    _, second = run_fresh(keep_first, out, first, prompt, keep=0.5, final_norm=id)
    assert second.kept[0].tolist() == [0, 2, 7, 8, 9]  # original columns, not positions in the first's output
    assert torch.equal(second.log_size[0], first.log_size[0, [0, 1, 4, 5, 6]])


def test_masks_are_causal_over_original_columns_and_skip_padding():
    kept = torch.tensor([[0, 2, 5]])
    valid = torch.tensor([[True, True, True]])
    padding = torch.tensor([[False, True, True, True, True, True]])
    mask = prefill_mask(kept, valid, padding, None, torch.float32, eager=False)[0, 0]
    # Column 0 is padding: its query attends only to itself, and no other query sees it.
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    later = decode_mask(kept, valid, padding.new_ones(1, 8), None, 6, 7, 1, torch.float32, eager=True)[0, 0]
    assert (later == 0).tolist() == [[True, True, True, True, True]]  # the prompt's slots, then columns 6 and 7
    sized = prefill_mask(kept, valid, padding.new_ones(1, 6), torch.tensor([[0.0, 1.0, 2.0]]), torch.float32, False)
    assert sized[0, 0, 2].tolist() == [0.0, 1.0, 2.0]


def test_the_testbed_never_imports_the_bench():
    """The bench imports the testbeds (their questions, prompts and processors); the reverse would be a loop."""
    testbed = Path(__file__).parents[2] / "mmaccel" / "prune" / "testbed"
    for path in testbed.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert module not in ("..bench", "mmaccel.prune.bench"), f"{path.name} imports {module}"
                assert not (module == ".." and any(a.name == "bench" for a in node.names)), path.name


def test_divprune_and_tome_share_the_one_stage_base():
    from mmaccel.prune.base import OneStageMethod
    from mmaccel.prune.divprune import DivPrune
    from mmaccel.prune.tome import ToMe

    for cls in (DivPrune, ToMe):
        assert issubclass(cls, OneStageMethod)
        assert {"__init__", "bind", "select"}.isdisjoint(vars(cls)) and "select_batch" in vars(cls)
