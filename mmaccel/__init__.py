"""mmaccel: fast autoregressive multimodal generation.

One speculative core (drafters x acceptance rules, batched) that every modality plugs into, plus
visual-token pruning for multimodal-LLM prefill.
"""

from typing import Any

from .acceptance import RULES, make_rule
from .drafting import DRAFTERS, DraftModelDrafter, JacobiDrafter, MultiHeadDrafter, make_drafter
from .engine import GenerationOutput, GenerationStats, SpeculativeDecoder
from .methods import METHODS, TokenTables, build_decoder
from .models import CFGModel, GuidedPrompt, HFCausalLM, TokenPrompt
from .sampling import SamplingConfig

__all__ = [
    "DRAFTERS",
    "RULES",
    "CFGModel",
    "DraftModelDrafter",
    "GenerationOutput",
    "GenerationStats",
    "GuidedPrompt",
    "METHODS",
    "HFCausalLM",
    "JacobiDrafter",
    "MultiHeadDrafter",
    "SamplingConfig",
    "SpeculativeDecoder",
    "TokenPrompt",
    "TokenTables",
    "build_decoder",
    "make_drafter",
    "make_rule",
    "prune",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The pruning service loads on first use: generation never pays for importing it.
    if name == "prune":
        import importlib

        return importlib.import_module(".prune", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
