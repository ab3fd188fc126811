"""mmaccel: fast autoregressive multimodal generation.

One speculative core (drafters x acceptance rules, batched) that every modality plugs into, plus
visual-token pruning for multimodal-LLM prefill.
"""

from . import prune
from .acceptance import RULES, make_rule
from .drafting import DRAFTERS, DraftModelDrafter, JacobiDrafter, MultiHeadDrafter, make_drafter
from .engine import GenerationOutput, GenerationStats, SpeculativeDecoder
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
    "HFCausalLM",
    "JacobiDrafter",
    "MultiHeadDrafter",
    "SamplingConfig",
    "SpeculativeDecoder",
    "TokenPrompt",
    "make_drafter",
    "make_rule",
    "prune",
]
__version__ = "0.1.0"
