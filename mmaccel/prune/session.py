"""Per-instance, reversible visual-token pruning over a loaded Hugging Face multimodal LLM.

How it hooks in (all through ``register_forward_pre_hook``/``register_forward_hook`` handles and instance
attributes on the one model object, removed on exit; the model classes are never touched):

- a pre-hook on the top-level model sees each call's inputs: a call with pixel inputs is a *prefill* (it
  finds the image/video placeholder tokens in ``input_ids``); a call without pixels on a non-empty cache
  after a pruned prefill is a *decode* step;
- a pre-hook on every decoder layer of the language model. At a stage's layer during prefill it asks the
  method which visual tokens survive, gathers them (merging dropped ones when the method says so) and
  passes the shorter sequence on; every layer at or after a stage gets the stage's RoPE cos/sin, position
  ids and a 4-D attention mask rebuilt for the kept tokens, so kept tokens keep their original positions
  (including Qwen2-VL's 3-D M-RoPE positions: cos/sin are gathered, never recomputed) and layers >= K
  cache only the kept tokens. The mask is built from each token's original column
  (:mod:`mmaccel.prune.masks`), so it is exact for left padding, for decode steps, and for samples that keep
  different numbers of tokens. What a stage keeps and merges is computed in :mod:`mmaccel.prune.stage_run`;
  this module only hooks it in.

Layers before the first stage see the full sequence and cache it, so the model's own bookkeeping
(``generate``'s position ids, Qwen2-VL's ``rope_deltas``) stays that of the unpruned prompt.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import ModelInfo, PruneMethod, Stage
from .families import Family, VisionAttentionProbe, detect_family, make_probe
from .masks import decode_mask, prefill_mask, real_tokens
from .stage_run import PromptTokens, StageResult, prefill_stats, run_fresh, run_reused, stage_at, vision_side

_VISUAL_KWARGS = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")


@dataclass
class _Call:
    """State of one forward call of the top-level model."""

    prefill: bool
    length: int  # tokens in this call
    past: int  # full-sequence tokens before this call
    padding: torch.Tensor  # (B, past + length) True for real tokens
    visual: torch.Tensor | None = None  # (B, length) prunable visual tokens
    input_ids: torch.Tensor | None = None
    image: torch.Tensor | None = None  # (B, length) image placeholder tokens
    video: torch.Tensor | None = None  # (B, length) video placeholder tokens
    side: torch.Tensor | None = None  # (B, length, 1 + c) vision score and metric
    videos: list[list[torch.Tensor]] = field(default_factory=list)  # per sample, (T, N) columns per video
    results: list[StageResult] = field(default_factory=list)
    masks: dict = field(default_factory=dict)
    rope: dict = field(default_factory=dict)
    captured: dict = field(default_factory=dict)
    reuse: list[StageResult] | None = None


class PruneSession:
    """Visual-token pruning installed on one model instance; use it as a context manager."""

    def __init__(self, model: nn.Module, method: PruneMethod):
        self.family: Family = detect_family(model)
        impl = self.family.attn_implementation()
        if impl not in ("sdpa", "eager"):
            raise ValueError(
                f"model: attention implementation {impl!r} is not supported by pruning, which needs a 4-D "
                "attention mask in pruned layers; load the model with attn_implementation='sdpa' or 'eager'"
            )
        self.model = model
        self.method = method
        info = ModelInfo(
            family=self.family.name,
            num_layers=len(self.family.layers),
            has_video=self.family.has_video,
            has_vision_attention=self.family.has_vision_attention,
        )
        if method.needs_video and not info.has_video:
            raise ValueError(
                f"method={method.name!r} prunes video tokens, but {type(model).__name__} takes no video; use "
                "LlavaOnevisionForConditionalGeneration or Qwen2VLForConditionalGeneration"
            )
        method.bind(info)
        self.stages: list[Stage] = sorted(method.stages, key=lambda s: s.layer)
        if any(s.wants_vision for s in self.stages) and not info.has_vision_attention:
            raise ValueError(
                f"method={method.name!r} needs the vision encoder's attention, which cannot be read from "
                f"{type(model).__name__} (its vision blocks attend within permuted windows); "
                "methods that work on it: fastv, dart, divprune, tome"
            )
        self._handles: list = []
        self._probe: VisionAttentionProbe | None = None
        self._patched: list[tuple[nn.Module, str]] = []
        self._call: _Call | None = None
        self._prompt: dict | None = None  # the last pruned prompt: its ids, pixel inputs and stage results
        self.last_prefill: dict | None = None  # stats of the last pruned prefill
        self._video_layouts: list[tuple[int, int, int]] = []  # logged by the video encoder, used by the prefill

    # ----------------------------------------------------------------------------------------- install
    def __enter__(self) -> PruneSession:
        self._install()
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _install(self) -> None:
        if self._handles:
            raise RuntimeError("this pruning session is already active")
        self._video_layouts.clear()
        model = self.model
        self._handles.append(model.register_forward_pre_hook(self._on_call, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._after_call, with_kwargs=True))
        for index, layer in enumerate(self.family.layers):
            self._handles.append(layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True))
        for stage in self.stages:
            if stage.wants_last_query or stage.wants_keys:
                attention = self.family.layers[stage.layer - 1].self_attn
                for name in ("q_proj", "k_proj"):
                    self._handles.append(
                        getattr(attention, name).register_forward_hook(self._projection_hook(stage.layer, name))
                    )
        if any(s.wants_vision for s in self.stages):
            self._probe = make_probe(self.family)
            self._handles.extend(self._probe.install())
        # Vision features may be computed before the prefill call (``generate`` pre-encodes them and passes
        # ``mm_encoder_outputs``), so what the stages need from that step is logged when it happens.
        inner = self.model.model
        for attr, kind in (("get_image_features", "image"), ("get_video_features", "video")):
            if not hasattr(inner, attr) or attr in inner.__dict__:
                continue
            original = getattr(inner, attr)

            @functools.wraps(original)
            def wrapped(*args, __original=original, __kind=kind, **kwargs):
                out = __original(*args, **kwargs)
                if __kind == "video" or self._probe is not None:  # nothing to log otherwise
                    self._encoded(__kind, inspect.signature(__original).bind(*args, **kwargs).arguments)
                return out

            setattr(inner, attr, wrapped)
            self._patched.append((inner, attr))

    def _encoded(self, kind: str, arguments: dict) -> None:
        if kind == "video":
            self._video_layouts.extend(self.family.video_layouts(arguments))
        if self._probe is not None:
            (self._probe.after_images if kind == "image" else self._probe.after_videos)(**arguments)

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for obj, attr in self._patched:
            delattr(obj, attr)
        self._patched.clear()
        self._call = None
        self._prompt = None

    # ------------------------------------------------------------------------------------- top level
    def _on_call(self, module: nn.Module, args: tuple, kwargs: dict):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        tokens = input_ids if input_ids is not None else embeds
        if tokens is None:
            self._call = None
            return None
        batch, length = tokens.shape[:2]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        attention = kwargs.get("attention_mask")
        has_pixels = any(kwargs.get(k) is not None for k in _VISUAL_KWARGS)
        if has_pixels:
            if input_ids is None:
                input_ids = self._ids_from_embeds(embeds)
            self._start_prefill(kwargs, input_ids, attention, cache)
            return None
        state = self._prompt
        cached = cache is not None and cache.get_seq_length() > 0
        if not cached:
            self._prompt = None  # a fresh text-only sequence: nothing of the pruned prompt applies any more
        if state is None or not cached or state["batch"] != batch:
            self._call = None
            return None
        past = state["seen"]
        first = self.stages[0]
        expected = state["results"][0].kept.shape[1] + past - state["length"]
        if cache.get_seq_length(first.layer) != expected:
            raise ValueError(
                f"cache: layer {first.layer} holds {cache.get_seq_length(first.layer)} tokens but the pruned "
                f"prompt left {expected}; a cache edited after pruning (e.g. cropped) cannot be continued"
            )
        padding = real_tokens(attention, batch, past + length, tokens.device)
        self._call = _Call(prefill=False, length=length, past=past, padding=padding, results=state["results"])
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = self._decode_positions(past, length, batch, tokens.device)
            return args, kwargs
        return None

    def _after_call(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        call = self._call
        self._call = None
        if call is None or self._prompt is None:
            return
        if call.prefill:
            self._video_layouts.clear()
            if self._probe is not None:
                self._probe.clear()
            # This call becomes the prompt a later, longer call (generation without a cache) extends.
            self._prompt.update(results=call.results, ids=call.input_ids, length=call.length)
        self._prompt["seen"] = call.past + call.length

    def _ids_from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        table = self.model.get_input_embeddings()
        ids = torch.full(embeds.shape[:2], -1, dtype=torch.long, device=embeds.device)
        for token in (self.family.image_token_id, self.family.video_token_id):
            if token is not None:
                ref = table(torch.tensor(token, device=embeds.device))
                ids[(embeds == ref).all(-1)] = token
        return ids

    def _decode_positions(self, past: int, length: int, batch: int, device) -> torch.Tensor:
        # What the unpruned model would use: positions continue after the full prompt, not the pruned cache.
        positions = torch.arange(past, past + length, device=device).expand(batch, -1)
        if self.family.is_qwen:
            deltas = getattr(self.model.model, "rope_deltas", None)
            positions = positions.unsqueeze(0).expand(3, -1, -1)
            if deltas is not None:
                positions = positions + deltas.view(1, -1, 1).to(device)
        return positions

    def _start_prefill(self, kwargs: dict, input_ids: torch.Tensor, attention, cache) -> None:
        batch, length = input_ids.shape
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(
                "cache: pruning a prompt on top of an already filled cache is not supported; start from an empty cache"
            )
        family = self.family
        image = input_ids == family.image_token_id
        video = input_ids == family.video_token_id if family.video_token_id is not None else torch.zeros_like(image)
        visual = image | video
        padding = real_tokens(attention, batch, length, input_ids.device)
        call = _Call(
            prefill=True,
            length=length,
            past=0,
            padding=padding,
            visual=visual,
            input_ids=input_ids,
            image=image,
            video=video,
        )
        # Video frame layout, and the trailing tokens of each video (a newline) that are never pruned.
        layouts = family.video_layouts(kwargs) or list(self._video_layouts)
        self._video_layouts.clear()
        prompt = self._prompt
        if not layouts and prompt is not None and _extends(prompt, input_ids, kwargs):
            layouts = prompt["layouts"]
        call.videos = [[] for _ in range(batch)]
        if layouts:
            flat = video.flatten().nonzero().flatten()
            start = 0
            for frames, per_frame, extra in layouts:
                span = flat[start : start + frames * per_frame + extra]
                start += frames * per_frame + extra
                sample = int(span[0]) // length
                columns = span % length
                call.videos[sample].append(columns[: frames * per_frame].view(frames, per_frame))
                if extra:
                    visual[sample, columns[frames * per_frame :]] = False
        # Reuse the prompt's choice when this call only extends the last pruned prompt (generation without
        # a cache re-runs the whole sequence): generated tokens must not change which visual tokens survive.
        if prompt is not None and _extends(prompt, input_ids, kwargs):
            call.reuse = prompt["results"]
        else:
            self._prompt = {
                "ids": input_ids,
                "pixels": {k: kwargs.get(k) for k in _VISUAL_KWARGS if kwargs.get(k) is not None},
                "batch": batch,
                "results": [],
                "length": length,
                "seen": 0,
            }
        self._prompt["layouts"] = layouts
        self._call = call

    # ---------------------------------------------------------------------------------------- layers
    def _layer_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            call = self._call
            if call is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            s = stage_at(self.stages, index)
            if call.prefill and s >= 0 and self.stages[s].layer == index:
                hidden = self._run_stage(s, hidden)
            if s >= 0:
                self._substitute(s, kwargs, hidden)
            if call.prefill and any(st.layer == index + 1 for st in self.stages):
                cos, sin = kwargs["position_embeddings"]
                call.captured[index + 1] = {"cos": cos, "sin": sin, "stage": s}
            if args:
                args = (hidden, *args[1:])
            else:
                kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook

    def _projection_hook(self, layer: int, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            call = self._call
            if call is not None and call.prefill:
                call.captured.setdefault(layer, {})[name] = output

        return hook

    def _full_rope(self, kwargs: dict, batch: int):
        cos, sin = kwargs["position_embeddings"]
        return cos.expand(batch, *cos.shape[1:]), sin.expand(batch, *sin.shape[1:])

    def _substitute(self, s: int, kwargs: dict, hidden: torch.Tensor) -> None:
        call = self._call
        result = call.results[s]
        batch = hidden.shape[0]
        if call.prefill:
            if s not in call.rope:
                cos, sin = self._full_rope(kwargs, batch)
                index = result.kept.unsqueeze(-1).expand(-1, -1, cos.shape[-1])
                call.rope[s] = (cos.gather(1, index), sin.gather(1, index))
            kwargs["position_embeddings"] = call.rope[s]
            position_ids = kwargs.get("position_ids")
            if isinstance(position_ids, torch.Tensor) and position_ids.shape[-1] == call.length:
                kwargs["position_ids"] = position_ids.expand(batch, -1).gather(1, result.kept)
        if s not in call.masks:
            call.masks[s] = self._stage_mask(result, hidden.dtype)
        kwargs["attention_mask"] = call.masks[s]

    def _stage_mask(self, result: StageResult, dtype: torch.dtype) -> torch.Tensor:
        call = self._call
        eager = self.family.attn_implementation() == "eager"
        if call.prefill:
            return prefill_mask(result.kept, result.valid, call.padding, result.log_size, dtype, eager)
        length = self._prompt["length"]
        return decode_mask(
            result.kept, result.valid, call.padding, result.log_size, length, call.past, call.length, dtype, eager
        )

    # ------------------------------------------------------------------------------------ one stage
    def _run_stage(self, s: int, hidden: torch.Tensor) -> torch.Tensor:
        """Stage ``s`` on the prefill's hidden states: its choice computed fresh, or the prompt's reused."""
        call = self._call
        stage = self.stages[s]
        previous = call.results[s - 1] if s > 0 else None
        if call.reuse is not None:
            out, result = run_reused(call.reuse[s], hidden, previous)
        else:
            if stage.wants_vision and call.side is None:
                call.side, call.visual = vision_side(
                    self._probe.image_side,
                    self._probe.video_side,
                    call.image,
                    call.video,
                    call.visual,
                    self.method.name,
                )
            wants_layer = stage.wants_last_query or stage.wants_keys
            out, result = run_fresh(
                stage,
                hidden,
                previous,
                PromptTokens(call.padding, call.visual, call.videos, call.side),
                keep=self.method.keep,
                final_norm=self.family.language_model.norm,
                attention=self.family.layers[stage.layer - 1].self_attn if wants_layer else None,
                captured=call.captured[stage.layer] if wants_layer else None,
            )
        call.results.append(result)
        if s == len(self.stages) - 1:
            self.last_prefill = prefill_stats(
                self.stages, call.results, call.padding, call.visual, len(self.family.layers)
            )
        return out

    @property
    def kept_columns(self) -> torch.Tensor | None:
        """(B, L') original columns of the tokens the last stage kept in the last prefill (-1: padding slot)."""
        if self._prompt is None or not self._prompt["results"]:
            return None
        r = self._prompt["results"][-1]
        return r.kept.masked_fill(~r.valid, -1)


def _extends(prompt: dict, input_ids: torch.Tensor, kwargs: dict) -> bool:
    """Whether this prefill only appends tokens to the last pruned prompt, with the same pixels."""
    known = prompt["ids"]
    return (
        input_ids.shape[0] == known.shape[0]
        and input_ids.shape[1] > known.shape[1]
        and torch.equal(input_ids[:, : known.shape[1]], known)
        and all(_same(kwargs.get(k), v) for k, v in prompt["pixels"].items())
    )


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a is b or (a.shape == b.shape and torch.equal(a, b))
    return a is b
