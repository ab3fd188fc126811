"""The method layer every modality shares: which drafter meets which rule, their parameters, and one builder.

A *method* is a named pair (drafter, acceptance rule), e.g. ``sjd`` = Jacobi window + SJD's criterion. A user
writes ``name`` or ``name:param=value:...`` (``lantern:delta=0.2:k=64``); values are typed by the signature of
the drafter or rule that takes them (:mod:`mmaccel.params`). A modality supplies only what is its own:

* its :class:`~mmaccel.models.TokenModel` (and optionally a draft model over the same vocabulary);
* its Jacobi initialisations, by name (``inits``: ``{"random": factory, "horizontal": factory, ...}``);
* its nearby-token tables (:class:`TokenTables`: ``"codebook"``, ``"embeddings"``), of which each rule reads the
  kind it declares (:attr:`mmaccel.acceptance.AcceptanceRule.table`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .acceptance import rule_class, rule_parameters
from .acceptance.neighbours import cache_root
from .drafting import DraftModelDrafter, JacobiDrafter
from .drafting.eagle import EagleDrafter, EagleHead
from .drafting.jacobi import WindowInit
from .engine import SpeculativeDecoder
from .models import CFGModel, TokenModel
from .params import Range, describe, parameters_of, split_spec, typed
from .sampling import SamplingConfig
from .window import AutoWindow


@dataclass(frozen=True)
class Method:
    """A drafter kind (``None``: plain AR, ``"jacobi"``, ``"draft"``) verified by an acceptance rule."""

    name: str
    drafter: str | None
    rule: str
    summary: str
    #: Drafter settings that make the method what it is (MC-SJD: ``coupling="maximal"``); a user may override them.
    drafter_defaults: Mapping[str, Any] = field(default_factory=dict)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ar", None, "exact", "plain autoregressive sampling, one token per forward (the baseline)"),
        Method("sjd", "jacobi", "sjd", "Speculative Jacobi Decoding (Teng et al. 2024), lossless"),
        Method(
            "mc-sjd",
            "jacobi",
            "sjd",
            "SJD with maximally coupled redrafts (MC-SJD, So et al. 2025), lossless",
            {"coupling": "maximal"},
        ),
        Method(
            "mc-sjd-tree",
            "jacobi",
            "sjd",
            "MC-SJD over a static Jacobi tree: the window's guesses as the trunk, the next most likely tokens of "
            "the same q as siblings at the first two depths (recursive rejection over siblings), lossless",
            {"coupling": "maximal", "tree": "2x2x1*30", "branch": "top"},
        ),
        Method("gsd", "jacobi", "gsd", "Grouped Speculative Decoding (So et al. 2025) over Jacobi drafts"),
        Method("lantern", "jacobi", "lantern", "LANTERN's relaxed acceptance (Jang et al. 2025) over Jacobi drafts"),
        Method(
            "lantern++-jacobi",
            "jacobi",
            "lantern++",
            "LANTERN++'s relaxed acceptance at every node of a static Jacobi tree with MC-SJD's coupled redrafts",
            {"coupling": "maximal", "tree": "2x2x1*62", "branch": "sample"},
        ),
        Method("typical", "jacobi", "typical", "Medusa's typical acceptance over Jacobi drafts"),
        Method("greedy", "jacobi", "greedy", "drafts kept while they match the target's argmax"),
        Method("draft", "draft", "exact", "speculative sampling with a draft model, lossless"),
        Method("lantern-draft", "draft", "lantern", "LANTERN's relaxed acceptance over draft-model drafts"),
        Method("lantern++", "draft", "lantern++", "LANTERN++'s multiplicative bound over draft-model drafts"),
        Method(
            "draft-tree",
            "draft",
            "exact",
            "speculative sampling over a static draft-model tree (recursive rejection over siblings), lossless",
            {"tree": "4x2x2x1"},
        ),
        Method(
            "draft-dynamic",
            "draft",
            "exact",
            "speculative sampling over a dynamic draft-model tree grown by confidence (EAGLE-2 style), lossless",
            {"tree": "4x4x4x4x4x4", "budget": 48},
        ),
        Method(
            "lantern++-tree",
            "draft",
            "lantern++",
            "LANTERN++ (Park et al. 2025): a static draft-model tree with the relaxed acceptance at every node",
            {"tree": "4x2x2x1"},
        ),
        Method("eagle", "eagle", "exact", "speculative sampling with an EAGLE draft head (Li et al. 2024), lossless"),
        Method("lantern-eagle", "eagle", "lantern", "LANTERN's relaxed acceptance over EAGLE drafts"),
        Method(
            "eagle-tree",
            "eagle",
            "exact",
            "speculative sampling over a static EAGLE tree (recursive rejection over siblings), lossless",
            {"tree": "4x2x2x1x1"},
        ),
        Method(
            "eagle-dynamic",
            "eagle",
            "exact",
            "EAGLE-2 (Li et al. 2024): speculative sampling over a dynamic tree the EAGLE head grows by its "
            "confidence, lossless (budget 100; the official code's is 60)",
            {"tree": "10x10x10x10x10x10", "budget": 100},
        ),
        Method(
            "lantern++-eagle",
            "eagle",
            "lantern++",
            "LANTERN++'s relaxed acceptance at every node of a static EAGLE tree",
            {"tree": "4x2x2x1x1"},
        ),
    )
}

#: Drafts per step when the user gives no window: SJD's 16 for Jacobi windows, 4 for a draft model (each of
#: its drafts costs a draft forward).
DEFAULT_WINDOW: dict[str, int] = {"jacobi": 16, "draft": 4, "eagle": 5}  # EAGLE: its official draft depth, 5
DRAFTERS: dict[str, type] = {"jacobi": JacobiDrafter, "draft": DraftModelDrafter, "eagle": EagleDrafter}
#: What a drafter takes from the user; the rest (the draft model, the init object) the modality supplies.
DRAFTER_PARAMETERS: dict[str, tuple[str, ...]] = {
    "jacobi": ("window", "init", "coupling", "tree", "branch"),
    "draft": ("window", "tree", "branch", "budget"),
    "eagle": ("window", "tree", "branch", "budget"),
}
#: How a command line may write each drafter parameter: a window is a count or "auto"; an init is chosen by name
#: from the modality's table; a coupling is one of the Jacobi drafter's; a tree is a static shape such as 4x2x2x1
#: (children per node at each depth, :class:`~mmaccel.tree.TreeShape`), none for a chain.
DRAFTER_TYPES: dict[str, Any] = {
    "window": int | Literal["auto"],
    "init": str,
    "coupling": Literal["none", "maximal", "gumbel"],
    "tree": str | None,
    "branch": Literal["top", "sample"],
    "budget": int | None,
}
#: Drafter parameters' ranges, for help texts (the drafters check their own values).
RANGES: dict[str, Range] = {"window": Range(1, None)}


def all_methods() -> dict[str, Method]:
    """:data:`METHODS`, plus every registered rule that no method uses yet, verifying Jacobi drafts under its own
    name: a new rule is a method as soon as it is registered in :data:`mmaccel.acceptance.RULES`."""
    from .acceptance import RULES

    used = {m.rule for m in METHODS.values()} | set(METHODS)
    derived = {
        name: Method(name, "jacobi", name, (cls.__doc__ or name).strip().splitlines()[0] + " (over Jacobi drafts)")
        for name, cls in RULES.items()
        if name not in used
    }
    return {**METHODS, **derived}


def method(name: str) -> Method:
    """The method called ``name``; an unknown name is a ValueError listing the known ones."""
    table = all_methods()
    if name not in table:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(table)}")
    return table[name]


def method_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters ``name`` takes: its drafter's (``window``, ``init``) and its rule's."""
    m = method(name)
    out: dict[str, inspect.Parameter] = {}
    if m.drafter is not None:
        drafter = parameters_of(DRAFTERS[m.drafter])
        defaults = {"window": DEFAULT_WINDOW[m.drafter], "init": "random", **m.drafter_defaults}
        for key in DRAFTER_PARAMETERS[m.drafter]:
            default = defaults.get(key, drafter[key].default)
            out[key] = drafter[key].replace(annotation=DRAFTER_TYPES[key], default=default)
    return {**out, **rule_parameters(m.rule)}


def parse_method(spec: str, where: str = "--methods") -> tuple[str, dict[str, Any]]:
    """``"lantern-draft:delta=0.2:k=30"`` -> ``("lantern-draft", {"delta": 0.2, "k": 30})``, typed and checked."""
    name, raw = split_spec(spec, where)
    method(name)
    return name, typed(raw, method_parameters(name), f"method {name!r}")


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for method ``name`` typed (text is parsed), with unknown names and bad types refused."""
    return typed(params, method_parameters(name), f"method {name!r}")


def describe_method(name: str, inits: Sequence[str] = ("random",)) -> str:
    """Help lines for one method: what it is, then each parameter's type, range and default."""
    m = method(name)
    params = method_parameters(name)
    rule = rule_class(m.rule)
    ranges, notes = {**RANGES, **rule.ranges}, rule.notes
    lines = [f"  {name}: {m.summary}"]
    for key, param in params.items():
        text = describe({key: param}, ranges)
        if key == "init":
            text += f"; one of {', '.join(inits)}"
        if key in notes:
            text += f" ({notes[key]})"
        lines.append(f"      {text}")
    return "\n".join(lines)


def methods_help(inits: Sequence[str] = ("random",)) -> str:
    """Every method and its parameters (type, range, default), for command-line help."""
    return "\n".join(
        ["methods and their parameters (--method NAME --param NAME=VALUE):"]
        + [describe_method(name, inits) for name in all_methods()]
    )


@dataclass
class TokenTables:
    """A modality's nearby-token tables, each computed only when a rule asks for its kind.

    ``providers`` maps a kind (``"codebook"``, ``"embeddings"``) to a function returning a ``[V, D]`` table;
    ``cache_dir`` is where derived tables (LANTERN's neighbour lists) are kept, beside the checkpoint.
    """

    providers: Mapping[str, Callable[[], torch.Tensor]] = field(default_factory=dict)
    cache_dir: str | os.PathLike | None = None

    def table(self, kind: str | None) -> torch.Tensor | None:
        """The table of ``kind``, or None when the modality has none of that kind (or none is asked for)."""
        return self.providers[kind]() if kind in self.providers else None

    @property
    def keep_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else cache_root() / "neighbours"


def build_decoder(
    model: TokenModel,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    sampling: SamplingConfig | None = None,
    guidance_scale: float = 1.0,
    always_guided: bool = False,
    draft: TokenModel | None = None,
    eagle: EagleHead | None = None,
    tables: TokenTables | None = None,
    inits: Mapping[str, Callable[[], WindowInit]] | None = None,
    compile: bool = False,
) -> SpeculativeDecoder:
    """The decoder for method ``name`` with ``params`` (its drafter's and its rule's; text values are parsed).

    ``guidance_scale != 1`` (or ``always_guided``) wraps the model, and the draft model, in classifier-free
    guidance. ``inits`` are the modality's Jacobi initialisations by name (default: uniformly random tokens).
    ``compile`` runs the step forward under ``torch.compile`` (see :class:`~mmaccel.engine.SpeculativeDecoder`).
    ``eagle`` is an EAGLE head bound to ``model`` (:meth:`~mmaccel.drafting.eagle.EagleHead.bind`), for the
    ``eagle`` methods.
    """
    m = method(name)
    params = check_params(name, params or {})
    guided = guidance_scale != 1.0 or always_guided  # CFGModel checks the scale

    def wrap(target: TokenModel) -> TokenModel:
        return CFGModel(target, guidance_scale) if guided else target

    drafter, auto_window = None, None
    if m.drafter is not None:
        window = params.pop("window", DEFAULT_WINDOW[m.drafter])  # the drafter checks a count
        if window == "auto":  # the parser let no other text through
            auto_window = AutoWindow()
            window = auto_window.max_window
        tree = params.pop("tree", m.drafter_defaults.get("tree"))  # a chain, or a static or dynamic tree
        branch = params.pop("branch", m.drafter_defaults.get("branch", "top"))
        if tree is not None and auto_window is not None:
            raise ValueError(f"method {name!r}: a tree drafts a fixed shape; window='auto' needs a chain")
        if m.drafter == "jacobi":
            init = params.pop("init", "random")
            inits = inits or {}
            if init not in inits and init != "random":
                raise ValueError(f"init of method {name!r} must be one of {sorted({'random', *inits})}, got {init!r}")
            coupling = params.pop("coupling", m.drafter_defaults.get("coupling", "none"))
            init_object = inits[init]() if init in inits else None
            drafter = JacobiDrafter(window, init_object, coupling=coupling, tree=tree, branch=branch)
        else:  # a draft model or an EAGLE head
            budget = params.pop("budget", m.drafter_defaults.get("budget"))
            shape = {"tree": tree, "branch": branch, "budget": budget}
            if m.drafter == "eagle":
                if eagle is None:
                    raise ValueError(f"method {name!r} needs EAGLE head weights; none were given")
                drafter = EagleDrafter(eagle, window, **shape)
            else:
                if draft is None:
                    raise ValueError(f"method {name!r} needs a draft model; none was given")
                drafter = DraftModelDrafter(wrap(draft), window, **shape)
    rule_cls = rule_class(m.rule)
    tables = tables or TokenTables()
    table = tables.table(rule_cls.table)
    if rule_cls.table is not None and table is None:  # the model's own table defines nearby tokens
        table = model.embedding_table()
    rule = rule_cls.build(table, tables.keep_dir, **params)
    return SpeculativeDecoder(
        wrap(model), drafter, rule, sampling or SamplingConfig(), auto_window=auto_window, compile=compile
    )


__all__ = [
    "DEFAULT_WINDOW",
    "METHODS",
    "Method",
    "all_methods",
    "TokenTables",
    "build_decoder",
    "check_params",
    "describe_method",
    "method",
    "method_parameters",
    "methods_help",
    "parse_method",
]
