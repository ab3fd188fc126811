"""The mesh methods: every method of the core's table, plus ``xspec``.

``xspec`` is XSpecMesh's multi-head speculative decoding (Chen et al. 2025, "XSpecMesh: Quality-Preserving
Auto-Regressive Mesh Generation Acceleration via Multi-Head Speculative Decoding"): draft heads on the backbone's
last hidden state (the core's :class:`~mmaccel.drafting.heads.DraftHeads`, distilled from the backbone) propose
the next tokens in the same forward, and a rule of the core verifies them: ``xspec`` (default ``rule=exact``) is
lossless, ``xspec:rule=typical`` or ``xspec:rule=gsd`` relax it. The core's table has no heads drafter yet, so
the pairing lives here, built from the core's pieces (drafter, rule, decoder); it adds no loop of its own.
``mask=true`` (default) draws the drafts from the heads' distributions masked to the layout's grammar and sort
order (:mod:`mmaccel.mesh.structure_mask`); ``mask=false`` uses the heads as they are. ``tree=2x2x1`` drafts
Medusa's static tree from the heads instead of a chain. ``branch=top`` (a tree's default) or ``sample`` (a chain's)
picks the drafts: the most likely tokens, or draws. ``tail=N`` extends a chain by ``N`` face-structure copies
past the heads (one-hot drafts, still lossless under ``exact``; our addition). Hinted heads (a ``hint.weight`` in ``heads.safetensors``,
distilled with ``distill_heads --hinted``) read the face-structure copy (:class:`~mmaccel.mesh.face_init.FaceInit`)
of each token they draft.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mmaccel.acceptance import rule_class, rule_parameters
from mmaccel.drafting.heads import DraftHeads, MultiHeadDrafter, heads_state_layers
from mmaccel.engine import SpeculativeDecoder
from mmaccel.methods import DRAFTER_TYPES, TokenTables, build_decoder, check_params, parse_method
from mmaccel.models import CFGModel, TokenModel
from mmaccel.params import coerce, split_spec, typed
from mmaccel.tree import TreeShape
from mmaccel.sampling import SamplingConfig

from .face_init import FaceInit
from .structure_mask import StructuredHeadsDrafter

HEADS_METHOD = "xspec"
#: The rule ``xspec`` verifies with when none is named.
DEFAULT_HEADS_RULE = "exact"


def check_mesh_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of mesh method ``name`` typed and checked (``xspec`` takes ``rule`` and that rule's parameters)."""
    if name != HEADS_METHOD:
        return check_params(name, params)
    params = dict(params)
    rule = params.pop("rule", DEFAULT_HEADS_RULE)
    rule_class(rule)  # an unknown rule names the known ones
    where = f"method {name!r}"
    mask = coerce(params.pop("mask", True), bool, "mask", where)
    tree = coerce(params.pop("tree", None), DRAFTER_TYPES["tree"], "tree", where)
    branch = params.pop("branch", None)  # None: the drafter's default (a chain samples, a tree takes the top)
    branch = None if branch is None else coerce(branch, DRAFTER_TYPES["branch"], "branch", where)
    tail = coerce(params.pop("tail", 0), int, "tail", where)
    if tail < 0 or (tail and tree is not None):
        raise ValueError(f"{where}: tail must be >= 0 and extends a chain (no tree), got tail={tail}")
    if tree is not None:  # a malformed shape is named when the spec is read, not when a decoder is built
        try:
            TreeShape.parse(tree)
        except ValueError as err:
            raise ValueError(f"{where}: tree: {err}") from None
    rule_params = typed(params, rule_parameters(rule), f"{where} with rule {rule!r}")
    return {"rule": rule, "mask": mask, "tree": tree, "branch": branch, "tail": tail, **rule_params}


def parse_mesh_method(spec: str, where: str = "--methods") -> tuple[str, dict[str, Any]]:
    """``"xspec:rule=typical:posterior_threshold=0.1"`` or any core method spec -> ``(name, typed params)``."""
    name, raw = split_spec(spec, where)
    if name != HEADS_METHOD:
        return parse_method(spec, where)
    return name, check_mesh_params(name, raw)


def mesh_inits(levels: int, eos: int) -> dict:
    """The mesh Jacobi initialisations by name, for a method's ``init`` parameter."""
    return {"face": lambda: FaceInit(levels, eos)}


def build_mesh_decoder(
    model: TokenModel,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    heads: DraftHeads | None = None,
    sampling: SamplingConfig | None = None,
    guidance_scale: float = 1.0,
    levels: int = 128,
    eos: int | None = None,
    tables: TokenTables | None = None,
) -> SpeculativeDecoder:
    """The decoder of mesh method ``name``: a core method through :func:`~mmaccel.methods.build_decoder` (with
    the ``face`` init available), or ``xspec`` with ``heads``."""
    params = check_mesh_params(name, params or {})
    if name != HEADS_METHOD:
        inits = mesh_inits(levels, eos if eos is not None else levels + 1)
        return build_decoder(
            model, name, params, sampling=sampling, guidance_scale=guidance_scale, tables=tables, inits=inits
        )
    if heads is None:
        raise ValueError(f"method {name!r} needs draft heads; this model has none (distil them first)")
    rule_name, mask, tree, branch = params.pop("rule"), params.pop("mask"), params.pop("tree"), params.pop("branch")
    tail_length = params.pop("tail")
    cls = rule_class(rule_name)
    tables = tables or TokenTables()
    table = tables.table(cls.table)
    if cls.table is not None and table is None:
        table = model.embedding_table()
    rule = cls.build(table, tables.keep_dir, **params)
    target = CFGModel(model, guidance_scale) if guidance_scale != 1.0 else model
    eos = eos if eos is not None else levels + 1
    hint = FaceInit(levels, eos) if heads.hinted else None  # hinted mesh heads are distilled with the face copy
    tail = {"tail": FaceInit(levels, eos), "tail_length": tail_length} if tail_length else {}
    if mask:
        drafter = StructuredHeadsDrafter(heads, levels, eos, hint=hint, tree=tree, branch=branch, **tail)
    else:
        drafter = MultiHeadDrafter(heads, tree=tree, branch=branch, hint=hint, **tail)
    return SpeculativeDecoder(target, drafter, rule, sampling or SamplingConfig())


def heads_from(state: Mapping[str, torch.Tensor], hidden_size: int, vocab_size: int) -> DraftHeads:
    """:class:`DraftHeads` shaped by a state dict's own tensors (head count and depth read from the names; hinted
    when it holds a ``hint`` embedding)."""
    names = [k for k in state if k.startswith("heads.")]
    num_heads = 1 + max(int(k.split(".")[1]) for k in names)
    return DraftHeads(hidden_size, vocab_size, num_heads, heads_state_layers(state), hinted="hint.weight" in state)
