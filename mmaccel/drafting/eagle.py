"""EAGLE-style drafting (Li et al. 2024, "EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty").

A one-layer decoder reads, at each position, the target's last hidden state ``h_t`` and the embedding of the
token ``x_{t+1}`` that ``h_t`` produced, and predicts the next hidden state ``h_{t+1}``; the TARGET's frozen
output layer turns the prediction into the distribution of ``x_{t+2}``. Drafting runs it autoregressively on its
own predictions for ``window`` tokens.

The construction follows the official code (SafeAILab/EAGLE, ``eagle/model/cnets1.py``, class ``Model``, the
EAGLE-1/EAGLE-2 draft head): ``fc(cat(embed(x), h))`` with a bias, then one Llama decoder layer whose input
RMSNorm is removed (the official ``LlamaDecoderLayer`` with ``index == 0``), no final norm, and the base model's
``lm_head`` applied to the output. The token embedding is the target's, frozen. Departures, named:

* the layer is ``transformers``' own :class:`~transformers.models.llama.modeling_llama.LlamaDecoderLayer` (the
  official code carries a copy), with its input norm replaced by the identity;
* the drafter's KV cache is the core's position-addressed :class:`~mmaccel.models.SlotCache`, addressed by the
  index of the generated token in each pair (slot ``s`` holds the pair that ends in generated token ``s``), so
  a batch advances at per-sample offsets and rejected drafts are overwritten, never rolled back;
* the drafter sees the pairs from the last prompt position on (the prefill returns only that position's hidden
  state); for the default image model (one class token) that is the whole context;
* trees: a static shape (EAGLE-1's tree, top-k per depth) or EAGLE-2's dynamic tree (``budget``, grown by
  :func:`~mmaccel.drafting.dynamic_tree.grow_tree`); each depth is one head forward over the previous depth's
  expanded nodes under tree attention in the head's own cache, each node fed its parent's predicted hidden state.

``q`` of each draft is the drafter's distribution under the target's sampling transform
(:func:`mmaccel.sampling.target_probs`), so the exact rule stays lossless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from ..checkpoint import load_checked, read_state_dict
from ..models.base import ModelOutput
from ..models.cache import SlotCache
from ..sampling import SamplingConfig, sample, target_probs
from ..tree import TreeLayout, along
from .base import Draft
from .branch import TreeDrafter, branch_children
from .dynamic_tree import candidates, grow_tree


@dataclass(frozen=True)
class EagleConfig:
    """Sizes of an EAGLE head; ``hidden_size`` and ``vocab_size`` must be the target's."""

    hidden_size: int
    vocab_size: int
    num_attention_heads: int
    intermediate_size: int
    num_key_value_heads: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "vocab_size", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EAGLE config: {name} must be an integer >= 1, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"EAGLE config: hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )

    def llama(self) -> LlamaConfig:
        config = LlamaConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads or self.num_attention_heads,
            num_hidden_layers=1,
            vocab_size=self.vocab_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
        )
        config._attn_implementation = "sdpa"
        return config

    def save(self, path: str | os.PathLike) -> None:
        from ..io import write_json_atomic

        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EagleConfig:
        try:
            fields = json.loads(Path(path).read_text())
            return cls(**fields)
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"EAGLE config {path}: {err}") from None


class EagleHead(nn.Module):
    """The EAGLE draft head: ``fc(cat(embed(x_{t+1}), h_t))`` and one Llama decoder layer without input norm,
    predicting ``h_{t+1}``. Its state dict holds only its own weights; the target's token embedding and output
    layer are attached with :meth:`bind` (the official head, too, reads the base model's ``lm_head``)."""

    def __init__(self, config: EagleConfig):
        super().__init__()
        self.config = config
        llama = config.llama()
        self.fc = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=True)
        self.layer = LlamaDecoderLayer(llama, layer_idx=0)
        self.layer.input_layernorm = nn.Identity()  # EAGLE's first layer reads fc's output unnormalised
        self.rotary = LlamaRotaryEmbedding(llama)
        self._target: tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module] | None = None

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def bind(self, embed: nn.Embedding | torch.Tensor, lm_head: nn.Module | torch.Tensor) -> EagleHead:
        """Attach the target's token embedding (``[V, D]`` table or ``nn.Embedding``) and output layer (a module
        mapping ``[..., D]`` to ``[..., V]`` logits, or its ``[V, D]`` weight); both stay the target's, frozen."""
        table = embed.weight if isinstance(embed, nn.Embedding) else embed
        weight = lm_head if isinstance(lm_head, torch.Tensor) else getattr(lm_head, "weight", None)
        d, v = self.hidden_size, self.vocab_size
        if table.dim() != 2 or table.shape[1] != d:
            raise ValueError(f"EAGLE head: hidden size {d} differs from the target's embedding {tuple(table.shape)}")
        if table.shape[0] < v:
            raise ValueError(f"EAGLE head: vocabulary {v} exceeds the target's embedding rows ({table.shape[0]})")
        if weight is not None and tuple(weight.shape) != (v, d):
            raise ValueError(
                f"EAGLE head: hidden size {d} / vocabulary {v} differ from the target's output layer "
                f"{tuple(weight.shape)} (vocabulary, hidden size)"
            )
        # Modules are kept as modules, so that moving the target to a device moves what the head reads.
        lookup = embed if isinstance(embed, nn.Module) else nn.Embedding.from_pretrained(table.detach(), freeze=True)
        if not isinstance(lm_head, nn.Module):
            weight, lm_head = lm_head, nn.Linear(d, v, bias=False)
            lm_head.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self._target = (lookup, lm_head)  # a tuple: neither is a submodule, so neither is in the state dict
        return self

    def _parts(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
        if self._target is None:
            raise RuntimeError("EAGLE head is not bound to a target: call bind(embed, lm_head) first")
        return self._target

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._parts()[0](tokens)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The target's output layer on (predicted) hidden states, float32."""
        return self._parts()[1](hidden).float()

    def forward(
        self,
        hidden: torch.Tensor,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        cache: SlotCache | None = None,
    ) -> torch.Tensor:
        """Predicted next hidden states ``[B, T, D]`` from target hidden states ``[B, T, D]`` and the tokens they
        produced ``[B, T]`` at ``positions`` ``[B, T]``. With ``cache``, keys and values go to slots ``positions``
        and each query sees slots ``<= `` its position; without, attention is causal over the ``T`` inputs."""
        dtype = self.fc.weight.dtype
        x = self.fc(torch.cat([self.embed(tokens).to(dtype), hidden.to(dtype)], -1))
        rope = self.rotary(x, positions)
        if cache is not None:
            cache.set_positions(positions)
            mask = cache.attention_mask(positions, x.dtype)
        else:
            t = x.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            mask = torch.zeros(t, t, dtype=x.dtype, device=x.device).masked_fill(~causal, torch.finfo(x.dtype).min)
            mask = mask.expand(x.shape[0], 1, t, t)
        return self.layer(x, attention_mask=mask, position_ids=positions, cache=cache, position_embeddings=rope)


def save_eagle(head: EagleHead, folder: str | os.PathLike, name: str = "eagle") -> Path:
    """``<name>.safetensors`` (float32) and ``<name>_config.json`` in ``folder``, each written atomically."""
    from safetensors.torch import save_file

    from ..io import write_atomic

    folder = Path(folder)
    state = {k: v.detach().contiguous().float() for k, v in head.state_dict().items()}
    path = folder / f"{name}.safetensors"
    write_atomic(path, lambda tmp: save_file(state, tmp))
    head.config.save(folder / f"{name}_config.json")
    return path


def load_eagle(path: str | os.PathLike, config: str | os.PathLike | None = None) -> EagleHead:
    """An EAGLE head from ``path`` (safetensors, or a weights-only state dict) and its config json (default:
    ``<stem>_config.json`` beside it). Bind it to its target before drafting."""
    path = Path(path)
    config_path = Path(config) if config is not None else path.with_name(f"{path.stem}_config.json")
    if not path.is_file():
        raise FileNotFoundError(f"EAGLE weights not found: {path}")
    if not config_path.is_file():
        raise FileNotFoundError(f"EAGLE config not found: {config_path}")
    head = EagleHead(EagleConfig.load(config_path))
    load_checked(head, read_state_dict(path), str(path))
    return head.eval()


class EagleDrafter(TreeDrafter):
    """Drafts ``window`` tokens per step with an :class:`EagleHead` bound to the target.

    After each verify forward it writes the pairs (target hidden state, committed token) of the step into its
    own cache, at slots equal to the tokens' generated indices (a batched write over the whole window; pairs
    past a sample's accepted ones are overwritten before any query can see them), and then drafts from the
    prediction at the last committed token: one head forward per draft.

    ``tree="4x2x2x1"`` drafts a static tree instead (EAGLE's static tree; children by ``branch``, see
    :mod:`mmaccel.drafting.branch`), and ``tree=...`` with ``budget=N`` EAGLE-2's dynamic tree (Li et al. 2024,
    "EAGLE-2: Faster Inference of Language Models with Dynamic Draft Trees"): the ``N`` most confident of the
    candidates grown by the shape. A tree's keys and values sit at the scratch slots after the root; the pairs of
    the accepted path are rewritten at their chain slots after the verify, as a chain's are, so nothing moves.
    """

    needs_hidden = True
    per_sample = ("_tokens", "_q", "_hidden", "_slot")

    def __init__(
        self,
        head: EagleHead,
        window: int = 5,
        sampling: SamplingConfig | None = None,
        tree: str | None = None,
        branch: str = "top",
        budget: int | None = None,
    ):
        self.head = head.eval()
        self.head._parts()  # refuse an unbound head here, not in the middle of a generation
        self.set_shape(window, tree, branch, budget)
        self.sampling = sampling

    @property
    def vocab_size(self) -> int:
        return self.head.vocab_size

    def begin(self, state, prefill: ModelOutput) -> None:
        if self.head.vocab_size != state.vocab_size:
            raise ValueError(
                f"EAGLE head vocabulary ({self.head.vocab_size}) differs from the target's ({state.vocab_size})"
            )
        if prefill.hidden is None or prefill.hidden.shape[-1] != self.head.hidden_size:
            got = None if prefill.hidden is None else prefill.hidden.shape[-1]
            raise ValueError(f"EAGLE head hidden size ({self.head.hidden_size}) differs from the target's ({got})")
        self._sampling = self.sampling or state.sampling
        # Slots are generated indices: the buffer plus room for one window of pairs, or one tree, past its end.
        self.cache = SlotCache(state.generated.shape[1] + 2 * (self.window + 1) + self.nodes)
        self._observe(state, prefill.hidden, torch.zeros_like(state.count))

    def resize(self, state, window: int) -> None:
        super().resize(state, window)
        if window > self._tokens.shape[1]:  # a shorter window proposes a prefix of the chain, itself a chain
            self._extend(state, window - self._tokens.shape[1])

    def reorder(self, rows: torch.Tensor) -> None:
        super().reorder(rows)
        self.cache.reorder(rows)

    def propose(self, state) -> Draft:
        self._start = state.count.clone()  # generated index of the first token this step will commit
        if self.tree is not None:
            return self._propose_tree(state)
        return Draft(self._tokens[:, : self.window], self._q[:, : self.window])

    def update(self, state, out: ModelOutput, p: torch.Tensor, accepted: torch.Tensor) -> None:
        self._observe(state, out.hidden, self._start, accepted)

    def top_k(self, depth: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most likely tokens ``[B, k]`` and their drafter probabilities ``[B, k]`` at draft ``depth``
        (0: the first draft) of the current chain, for growing a tree (EAGLE-2 expands the top-k per node)."""
        if not 0 <= depth < self._q.shape[1]:
            raise ValueError(f"depth must lie in [0, {self._q.shape[1]}), got {depth}")
        probs, tokens = self._q[:, depth].topk(k, dim=-1)
        return tokens, probs

    @torch.no_grad()
    def _observe(self, state, hidden: torch.Tensor, start: torch.Tensor, accepted: torch.Tensor | None = None):
        """Write the pairs of the last target forward (``hidden`` ``[B, T, D]``, the hidden states that produced
        generated tokens ``start .. start + T - 1``) and draft a fresh window from the last committed one."""
        t = hidden.shape[1]
        slots = (start[:, None] + torch.arange(t, device=start.device)).clamp(max=self.cache.max_length - 1)
        tokens = state.generated.gather(1, slots.clamp(max=state.generated.shape[1] - 1))
        predicted = self.head(hidden, tokens, slots, self.cache)
        last = (state.count - 1 - start).clamp(0, t - 1) if accepted is None else accepted.clamp(0, t - 1)
        index = last.view(-1, 1, 1).expand(-1, 1, predicted.shape[-1])
        self._hidden = predicted.gather(1, index)  # [B, 1, D]: the prediction at the last committed token
        self._slot = slots.gather(1, last[:, None])  # [B, 1]
        self._tokens = self._q = None
        if self.tree is None:  # a tree is grown at the proposal, from this prediction
            self._extend(state, self.window)
        state.stats.draft_nfe += 1

    def _draft(self, state, hidden: torch.Tensor, tokens: torch.Tensor, depth: torch.Tensor, layout: TreeLayout):
        """One head forward over tree nodes (``tokens`` ``[B, n]`` at ``depth``, fed their parents' predicted
        ``hidden`` ``[B, n, D]``): their predicted hidden states and the draft distributions below them."""
        with self.cache.tree_attention(layout):
            predicted = self.head(hidden, tokens, self._slot + depth, self.cache)
        state.stats.draft_nfe += 1
        return predicted, target_probs(self.head.logits(predicted), self._sampling)

    def _propose_tree(self, state) -> Draft:
        q_root = target_probs(self.head.logits(self._hidden[:, 0]), self._sampling)  # [B, V]
        if self.budget is not None:
            b, m = q_root.shape[0], candidates(self.tree)
            hidden = self._hidden.new_zeros(b, m + 1, self._hidden.shape[-1])  # per candidate tree index
            hidden[:, :1] = self._hidden

            def forward(tokens: torch.Tensor, depth: torch.Tensor, layout: TreeLayout, parent: torch.Tensor):
                predicted, q = self._draft(state, along(hidden, parent), tokens, depth, layout)
                hidden.scatter_(1, layout.node[..., None].expand_as(predicted), predicted)
                return q

            draft, _ = grow_tree(forward, q_root, self.tree, self.budget)
            return draft
        shape, device, batch = self.tree, state.device, state.batch_size
        ancestors = shape.ancestors.to(device)
        parents, drafts, qs = shape.parents.to(device).expand(batch, -1), [], []
        q, hidden = q_root[:, None], self._hidden  # the nodes of the previous depth: their q and predictions
        for d, k in enumerate(shape.branching):
            token, q_node = branch_children(q, k, self.branch, state.rng)
            drafts.append(token)
            qs.append(q_node)
            if d + 1 < shape.depth:  # the deepest nodes are never forwarded: nothing is drafted below them
                level = torch.arange(shape.level(d).start, shape.level(d).stop, device=device) + 1
                depth = torch.full_like(level, d + 1).expand(batch, -1)
                layout = TreeLayout(level.expand(batch, -1), depth, ancestors[level].expand(batch, -1, -1))
                hidden, q = self._draft(state, hidden.repeat_interleave(k, 1), token, depth, layout)
        return Draft(torch.cat(drafts, 1), torch.cat(qs, 1), parents)

    def _extend(self, state, n: int) -> None:
        """Draft ``n`` more tokens onto the current chain: sample from the prediction, feed it back."""
        uniforms = state.rng.uniform(n)
        tokens, qs = [], []
        for i in range(n):  # a handful of drafts, each one head forward
            if i or self._tokens is not None:
                last = tokens[-1] if tokens else self._tokens[:, -1]
                self._slot = (self._slot + 1).clamp(max=self.cache.max_length - 1)
                self._hidden = self.head(self._hidden, last[:, None], self._slot, self.cache)
                state.stats.draft_nfe += 1
            q = target_probs(self.head.logits(self._hidden[:, 0]), self._sampling)
            qs.append(q)
            tokens.append(sample(q, uniforms[:, i]))
        new_tokens, new_q = torch.stack(tokens, 1), torch.stack(qs, 1)
        if self._tokens is not None:
            new_tokens, new_q = torch.cat([self._tokens, new_tokens], 1), torch.cat([self._q, new_q], 1)
        self._tokens, self._q = new_tokens, new_q


__all__ = ["EagleConfig", "EagleDrafter", "EagleHead", "load_eagle", "save_eagle"]
