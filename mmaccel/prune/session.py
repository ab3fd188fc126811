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
  cache only the kept tokens. The mask is built from each token's original column, so it is exact for
  left padding, for decode steps, and for samples that keep different numbers of tokens (their shorter
  rows are left-padded with masked slots that attend only to themselves).

Layers before the first stage see the full sequence and cache it, so the model's own bookkeeping
(``generate``'s position ids, Qwen2-VL's ``rope_deltas``) stays that of the unpruned prompt.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Choice, ModelInfo, PruneMethod, Stage, StageInput
from .families import Family, VisionAttentionProbe, detect_family, make_probe

_VISUAL_KWARGS = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class _StageResult:
    kept: torch.Tensor  # (B, Ls) original column of each slot
    valid: torch.Tensor  # (B, Ls) False for left-padding slots added to even out kept counts
    local: list[torch.Tensor]  # per sample: kept slots as indices into the stage's input sequence
    merges: list[Choice | None]
    input_length: int  # stage input length at the prompt's prefill, for reusing the choice on longer inputs
    log_size: torch.Tensor | None = None  # (B, Ls) log of the tokens each slot stands for; None: all 1


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
    results: list[_StageResult] = field(default_factory=list)
    masks: dict = field(default_factory=dict)
    rope: dict = field(default_factory=dict)
    captured: dict = field(default_factory=dict)
    reuse: list[_StageResult] | None = None


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
        self._current = 0  # the stage being run
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
        padding = self._padding(attention, batch, past + length, tokens.device)
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

    @staticmethod
    def _padding(attention, batch: int, total: int, device) -> torch.Tensor:
        if attention is not None and attention.ndim == 2 and attention.shape[1] == total:
            return attention.bool()
        return torch.ones(batch, total, dtype=torch.bool, device=device)

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
        padding = self._padding(attention, batch, length, input_ids.device)
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
    def _stage_at(self, index: int) -> int:
        """Index of the last stage whose layer is <= index, or -1."""
        found = -1
        for i, stage in enumerate(self.stages):
            if stage.layer <= index:
                found = i
        return found

    def _layer_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            call = self._call
            if call is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            s = self._stage_at(index)
            if call.prefill and s >= 0 and self.stages[s].layer == index:
                hidden = self._run_stage(s, hidden, kwargs)
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
            call.masks[s] = self._mask(result, hidden.dtype)
        kwargs["attention_mask"] = call.masks[s]

    def _mask(self, result: _StageResult, dtype: torch.dtype) -> torch.Tensor:
        """4-D mask over this stage's cache: key j is visible to query i iff its original column is
        <= the query's, it is a real token, and it is not a padding slot."""
        call = self._call
        batch = result.kept.shape[0]
        device = result.kept.device
        if call.prefill:
            key_col, key_ok = result.kept, result.valid
            query_col = key_col
        else:
            # Columns past the pruned prompt are generated tokens, cached by every layer.
            tail = torch.arange(self._prompt["length"], call.past + call.length, device=device).expand(batch, -1)
            key_col = torch.cat([result.kept, tail], dim=1)
            key_ok = torch.cat([result.valid, torch.ones_like(tail, dtype=torch.bool)], dim=1)
            query_col = torch.arange(call.past, call.past + call.length, device=device).expand(batch, -1)
        key_ok = key_ok & call.padding.gather(1, key_col)
        allowed = (key_col[:, None, :] <= query_col[:, :, None]) & key_ok[:, None, :]
        # A query with nothing to attend to (a padding slot) attends to its own slot: no NaN rows in SDPA.
        offset = key_col.shape[1] - query_col.shape[1]
        own = torch.arange(query_col.shape[1], device=device)
        lonely = ~allowed.any(-1)
        allowed[:, own, own + offset] |= lonely
        allowed = allowed.unsqueeze(1)
        if result.log_size is not None:
            # Proportional attention: + log(size) on every logit towards a token that stands for several.
            bias = result.log_size.to(dtype)
            if not call.prefill:
                bias = torch.nn.functional.pad(bias, (0, key_col.shape[1] - bias.shape[1]))
            return torch.where(allowed, bias[:, None, None, :], torch.finfo(dtype).min)
        if self.family.attn_implementation() == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        return allowed

    # ------------------------------------------------------------------------------------ one stage
    def _run_stage(self, s: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        call = self._call
        stage = self.stages[s]
        self._current = s
        batch, length = hidden.shape[:2]
        if s == 0:
            prev_kept = torch.arange(length, device=hidden.device).expand(batch, -1)
            prev_valid = torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
        else:
            prev_kept, prev_valid = call.results[s - 1].kept, call.results[s - 1].valid
        if stage.wants_vision and call.reuse is None:
            self._side_data(call)  # also drops newline tokens from the prunable set
        real = prev_valid & call.padding.gather(1, prev_kept)
        visual = call.visual.gather(1, prev_kept) & real
        reuse = call.reuse[s] if call.reuse is not None else None
        if reuse is None:
            extras = self._stage_extras(stage, hidden, prev_kept, real, call)
            texts, inputs, empty = [], [], []
            for b in range(batch):
                vis = visual[b].nonzero().flatten()
                texts.append((real[b] & ~visual[b]).nonzero().flatten())
                empty.append(vis.numel() == 0)
                if not empty[b]:
                    inputs.append(self._stage_input(b, hidden[b], vis, texts[b], extras, prev_kept[b], real[b]))
            chosen = iter(stage.choose(inputs))
            choices = [Choice(keep=texts[b][:0]) if empty[b] else next(chosen) for b in range(batch)]
        locals_, merges, rows = [], [], []
        for b in range(batch):
            if reuse is not None:
                tail = torch.arange(reuse.input_length, length, device=hidden.device)
                local = torch.cat([reuse.local[b], tail])
                choice = reuse.merges[b]
            else:
                choice = choices[b]
                local = torch.cat([texts[b], choice.keep]).sort().values
            row = hidden[b]
            if choice is not None and choice.src is not None:
                row = _apply_merge(row, choice)
            locals_.append(local)
            merges.append(choice if choice is not None and choice.src is not None else None)
            rows.append(row)
        width = max(len(x) for x in locals_)
        local_idx = torch.zeros(batch, width, dtype=torch.long, device=hidden.device)
        valid = torch.zeros(batch, width, dtype=torch.bool, device=hidden.device)
        for b, local in enumerate(locals_):
            local_idx[b, width - len(local) :] = local
            valid[b, width - len(local) :] = True
        merged = torch.stack(rows)
        out = merged.gather(1, local_idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        kept = prev_kept.gather(1, local_idx)
        if reuse is not None:
            # Generation without a cache: the same slots, plus the new tokens (size 1) at the right end.
            log_size = reuse.log_size
            if log_size is not None:
                log_size = torch.nn.functional.pad(log_size, (0, width - log_size.shape[1]))
        else:
            prev_size = call.results[s - 1].log_size if s > 0 else None
            log_size = _log_sizes(prev_size, choices, local_idx, length)
        call.results.append(
            _StageResult(kept, valid & prev_valid.gather(1, local_idx), locals_, merges, length, log_size)
        )
        if s == len(self.stages) - 1:
            self._record_stats(call)
        return out

    def _stage_extras(self, stage: Stage, hidden, prev_kept, real, call: _Call) -> dict:
        extras: dict = {}
        if stage.wants_last_query or stage.wants_keys:
            captured = call.captured[stage.layer]
            attention = self.family.layers[stage.layer - 1].self_attn
            dim = attention.head_dim
            cos, sin = captured["cos"], captured["sin"]
            cos, sin = cos.expand(hidden.shape[0], *cos.shape[1:]), sin.expand(hidden.shape[0], *sin.shape[1:])
            k = captured["k_proj"]
            k = k.view(*k.shape[:2], -1, dim).transpose(1, 2)
            k = k * cos.unsqueeze(1) + _rotate_half(k) * sin.unsqueeze(1)
            if stage.wants_keys:
                extras["keys"] = k.transpose(1, 2).flatten(2)
            if stage.wants_last_query:
                q = captured["q_proj"][:, -1:]
                q = q.view(q.shape[0], 1, -1, dim).transpose(1, 2)
                q = q * cos[:, -1:].unsqueeze(1) + _rotate_half(q) * sin[:, -1:].unsqueeze(1)
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
                scores = (q @ k.transpose(-1, -2)).squeeze(2) * attention.scaling
                # The last query row sees every earlier real token (left padding keeps it at the end).
                scores = scores.masked_fill(~real.unsqueeze(1), float("-inf"))
                extras["last_attention"] = torch.softmax(scores.float(), dim=-1).mean(1)
        return extras

    def _side_data(self, call: _Call) -> torch.Tensor:
        if call.side is not None:
            return call.side
        probe = self._probe
        ids_image, ids_video = call.image, call.video
        if (ids_image.any() and not probe.image_side) or (ids_video.any() and not probe.video_side):
            raise ValueError(
                f"method={self.method.name!r} needs the vision encoder's attention, but the vision features "
                "were not computed in this call (precomputed mm_encoder_outputs cannot be pruned by it)"
            )
        width = (probe.image_side or probe.video_side)[0].shape[-1]
        side = torch.full((*call.visual.shape, width), float("nan"), device=call.visual.device)
        if probe.image_side:
            side[ids_image] = torch.cat(probe.image_side).to(side)
        if probe.video_side:
            side[ids_video] = torch.cat(probe.video_side).to(side)
        # Newline tokens (NaN rows) stay, like text.
        call.visual &= ~side[..., 0].isnan()
        call.side = side
        return side

    def _stage_input(self, b: int, hidden, vis, text, extras: dict, kept_row, real_row) -> StageInput:
        call = self._call
        inp = StageInput(
            hidden=hidden,
            visual=vis,
            text=text,
            keep=self.method.keep,
            final_norm=self.family.language_model.norm,
        )
        if "last_attention" in extras:
            inp.last_attention = extras["last_attention"][b]
        if "keys" in extras:
            inp.keys = extras["keys"][b]
        if call.side is not None and self.stages[self._current].wants_vision:
            side = call.side[b, kept_row[vis]]
            inp.vision_score, inp.vision_metric = side[:, 0], side[:, 1:]
        if call.videos[b]:
            # Original columns -> positions in the current sequence (tokens dropped earlier map to -1).
            where = torch.full((call.length,), -1, dtype=torch.long, device=hidden.device)
            slots = real_row.nonzero().flatten()
            where[kept_row[slots]] = slots
            inp.videos = [where[grid] for grid in call.videos[b]]
        return inp

    def _record_stats(self, call: _Call) -> None:
        layers = len(self.family.layers)
        visual_full = int(call.visual.sum())
        tokens_per_layer, visual_per_layer = [], []
        for index in range(layers):
            s = self._stage_at(index)
            if s < 0:
                tokens_per_layer.append(int(call.padding.sum()))
                visual_per_layer.append(visual_full)
            else:
                r = call.results[s]
                real = r.valid & call.padding.gather(1, r.kept)
                tokens_per_layer.append(int(real.sum()))
                visual_per_layer.append(int((real & call.visual.gather(1, r.kept)).sum()))
        self.last_prefill = {
            "batch": call.padding.shape[0],
            "visual_tokens": visual_full,
            "tokens_per_layer": tokens_per_layer,
            "visual_tokens_per_layer": visual_per_layer,
        }

    @property
    def kept_columns(self) -> torch.Tensor | None:
        """(B, L') original columns of the tokens the last stage kept in the last prefill (-1: padding slot)."""
        if self._prompt is None or not self._prompt["results"]:
            return None
        r = self._prompt["results"][-1]
        return r.kept.masked_fill(~r.valid, -1)


def _log_sizes(
    prev: torch.Tensor | None, choices: list[Choice], local_idx: torch.Tensor, length: int
) -> torch.Tensor | None:
    """Log sizes of a stage's output slots (``local_idx`` indexes its input of ``length`` tokens): the input's
    sizes (``prev``, as logs; all 1 when None), each kept token grown by the sizes of the tokens it absorbs.
    None while every size is 1."""
    if prev is None and all(c.absorbed is None for c in choices):
        return None
    size = prev.exp() if prev is not None else torch.ones(len(choices), length, device=local_idx.device)
    moves = [
        (b * length + c.absorbed, b * length + c.absorber) for b, c in enumerate(choices) if c.absorbed is not None
    ]
    if moves:
        flat = size.view(-1)
        absorbed, absorber = (torch.cat(x) for x in zip(*moves))
        flat.index_add_(0, absorber, flat[absorbed])
    return size.gather(1, local_idx).log()


def _apply_merge(row: torch.Tensor, choice: Choice) -> torch.Tensor:
    acc = torch.zeros_like(row).index_add_(0, choice.dest, row[choice.src] * choice.weight.to(row).unsqueeze(-1))
    touched = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
    touched[choice.dest] = True
    return torch.where(touched.unsqueeze(-1), acc, row)


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
