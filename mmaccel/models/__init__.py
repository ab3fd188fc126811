"""Token-model adapters: the contract, the position-addressed KV cache, HF causal LMs and guidance."""

from .base import ModelOutput, Prompt, TokenModel, TokenPrompt
from .cache import SlotCache
from .cfg import CFGModel, GuidedPrompt
from .hf import HFCausalLM

__all__ = [
    "CFGModel",
    "GuidedPrompt",
    "HFCausalLM",
    "ModelOutput",
    "Prompt",
    "SlotCache",
    "TokenModel",
    "TokenPrompt",
]
