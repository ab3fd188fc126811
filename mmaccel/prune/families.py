"""The supported model classes and what pruning needs to know about each: where the language model's
decoder layers are, which token ids mark image and video slots, how video tokens are laid out in frames,
and how to read the vision encoder's attention for the methods that rank tokens by it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# class name -> family; the names also make the error message for unsupported models.
SUPPORTED_CLASSES = {
    "LlavaForConditionalGeneration": "llava",
    "LlavaOnevisionForConditionalGeneration": "llava_onevision",
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
}
# Attention-map elements the vision probe materialises at once (64M floats, 256 MB): SigLIP-so400m's 729-patch
# maps with 16 heads are 8.5M elements a tile, so a 32-frame video is scored in five steps.
_MAP_ELEMENTS = 1 << 26


@dataclass
class Family:
    name: str
    model: nn.Module
    language_model: nn.Module
    image_token_id: int
    video_token_id: int | None

    @property
    def layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def has_video(self) -> bool:
        return self.video_token_id is not None

    @property
    def is_qwen(self) -> bool:
        return self.name in ("qwen2_vl", "qwen2_5_vl")

    @property
    def has_vision_attention(self) -> bool:
        # Qwen2.5-VL runs most vision blocks on permuted windows and un-permutes only after the merger, so
        # per-patch attention would need that bookkeeping too; it is not supported.
        return self.name != "qwen2_5_vl"

    def attn_implementation(self) -> str:
        return self.language_model.config._attn_implementation

    def video_layouts(self, kwargs: dict) -> list[tuple[int, int, int]]:
        """(frames, tokens per frame, trailing extra tokens) for each video in the call, in input order."""
        if self.name == "llava_onevision" and kwargs.get("pixel_values_videos") is not None:
            videos = kwargs["pixel_values_videos"]
            vision = self.model.config.vision_config
            side = vision.image_size // vision.patch_size
            per_frame = math.ceil(side / 2) ** 2  # `apply_pooling` halves each side
            return [(videos.shape[1], per_frame, 1)] * videos.shape[0]  # one newline token closes each video
        if self.is_qwen and kwargs.get("video_grid_thw") is not None:
            merge = self.model.config.vision_config.spatial_merge_size
            return [(int(t), int(h * w) // merge**2, 0) for t, h, w in kwargs["video_grid_thw"].tolist()]
        return []


def make_probe(family: Family):
    """The vision-attention reader for ``family`` (see :meth:`Family.has_vision_attention`)."""
    return QwenVisionAttentionProbe(family) if family.name == "qwen2_vl" else VisionAttentionProbe(family)


def detect_family(model: nn.Module) -> Family:
    name = next((SUPPORTED_CLASSES[c.__name__] for c in type(model).__mro__ if c.__name__ in SUPPORTED_CLASSES), None)
    if name is None:
        raise TypeError(
            f"model: {type(model).__name__} is not supported for visual-token pruning; supported classes: "
            + ", ".join(SUPPORTED_CLASSES)
        )
    config = model.config
    video_token_id = getattr(config, "video_token_id", None) if name != "llava" else None
    return Family(
        name=name,
        model=model,
        language_model=model.model.language_model,
        image_token_id=config.image_token_id,
        video_token_id=video_token_id,
    )


class VisionAttentionProbe:
    """Reads the vision encoder's attention at the feature layer, without eager attention.

    Forward hooks on the feature layer's ``q_proj``/``k_proj`` keep their outputs; after the tower has run,
    the scores VisionZip and HoliTom rank tokens by are rebuilt from them: the [CLS] row when the features
    drop [CLS] (CLIP in LLaVA-1.5), otherwise the mean attention each patch receives (SigLIP). The keys,
    averaged over heads, are the similarity metric of VisionZip's contextual merging. Per-patch results go
    through the model's own packing (anyres unpadding, video pooling, newline tokens) so they line up with
    the image and video placeholder tokens; newline tokens come out as NaN and are never pruned.
    """

    def __init__(self, family: Family):
        self.family = family
        tower = family.model.model.vision_tower
        config = family.model.config
        layer_index = config.vision_feature_layer
        if not isinstance(layer_index, int):
            layer_index = layer_index[-1]
        # transformers 5 vision towers hold the encoder directly; older ones wrap it in `vision_model`.
        layers = getattr(tower, "vision_model", tower).encoder.layers
        # hidden_states[i] is the output of encoder layer i - 1 (hidden_states[0] is the embedding).
        if layer_index < 0:
            layer_index += len(layers) + 1
        self.attention = layers[layer_index - 1].self_attn
        self.drops_cls = config.vision_feature_select_strategy == "default"
        self._q: list[torch.Tensor] = []
        self._k: list[torch.Tensor] = []
        self.image_side: list[torch.Tensor] = []  # per call, (tokens, 1 + head_dim) in placeholder order
        self.video_side: list[torch.Tensor] = []

    def install(self) -> list:
        handles = [
            self.attention.q_proj.register_forward_hook(lambda m, a, out: self._q.append(out.detach())),
            self.attention.k_proj.register_forward_hook(lambda m, a, out: self._k.append(out.detach())),
        ]
        return handles

    def clear(self) -> None:
        self._q.clear()
        self._k.clear()
        self.image_side.clear()
        self.video_side.clear()

    def _patch_side(self) -> torch.Tensor:
        """(tiles, patches, 1 + head_dim): attention score then key metric, for the last tower call."""
        q, k = torch.cat(self._q), torch.cat(self._k)
        self._q.clear()
        self._k.clear()
        heads, dim = self.attention.num_heads, self.attention.head_dim
        q = q.view(*q.shape[:2], heads, dim).transpose(1, 2).float()
        k = k.view(*k.shape[:2], heads, dim).transpose(1, 2).float()
        if self.drops_cls:
            score = torch.softmax(q[:, :, :1] @ k.transpose(-1, -2) * self.attention.scale, dim=-1)
            score = score.sum(1)[:, 0, 1:]
            metric = k.mean(1)[:, 1:]
        else:
            # The full maps are only needed to average their columns: as many tiles at a time as keep the maps
            # under _MAP_ELEMENTS, not one at a time (a Python step per frame is most of the cost on small towers).
            step = max(1, _MAP_ELEMENTS // (heads * q.shape[2] * k.shape[2]))
            score = torch.cat(
                [
                    torch.softmax(qt @ kt.transpose(-1, -2) * self.attention.scale, dim=-1).sum(1).mean(1)
                    for qt, kt in zip(q.split(step), k.split(step))
                ]
            )
            metric = k.mean(1)
        return torch.cat([score.unsqueeze(-1), metric], dim=-1)

    def after_images(
        self, pixel_values=None, image_sizes=None, vision_aspect_ratio=None, batch_num_images=None, **_
    ) -> None:
        side = self._patch_side()
        inner = self.family.model.model
        if self.family.name == "llava":
            self.image_side.append(side.flatten(0, 1))
            return
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        config = self.family.model.config
        if batch_num_images is None:
            need_patching = [True] * len(image_sizes)
        else:
            need_patching = [n == 1 for n in batch_num_images for _ in range(n)]
        tiles = [
            image_size_to_num_patches(imsize, config.image_grid_pinpoints, config.vision_config.image_size)
            if patch
            else 1
            for imsize, patch in zip(image_sizes, need_patching)
        ]
        marker = torch.full((side.shape[-1],), float("nan"), device=side.device)
        packed, _ = inner.pack_image_features(
            torch.split(side, tiles),
            image_sizes,
            image_newline=marker,
            vision_aspect_ratio=vision_aspect_ratio or config.vision_aspect_ratio,
        )
        self.image_side.append(torch.cat(packed))

    def after_videos(self, pixel_values_videos: torch.Tensor, **_) -> None:
        side = self._patch_side()
        videos, frames = pixel_values_videos.shape[:2]
        pooled = self.family.model.model.apply_pooling(side).reshape(videos, -1, side.shape[-1])
        marker = torch.full((videos, 1, side.shape[-1]), float("nan"), device=side.device)
        self.video_side.append(torch.cat([pooled, marker], dim=1).flatten(0, 1))


class QwenVisionAttentionProbe:
    """Qwen2-VL's counterpart of :class:`VisionAttentionProbe`: attention of the last vision block.

    A pre-hook on the block's attention keeps its input, cu_seqlens and rotary cos/sin; afterwards q and k
    are rebuilt from the fused ``qkv`` projection with the same rotary embedding, and the mean attention
    each patch receives is computed per attention segment (image or frame). The patch merger turns each run
    of ``spatial_merge_size**2`` consecutive patches into one LLM token, so scores are summed and keys
    averaged over those runs.
    """

    def __init__(self, family: Family):
        self.family = family
        visual = family.model.model.visual
        self.attention = visual.blocks[-1].attn
        self.group = visual.spatial_merge_size**2
        self._inputs: list[tuple] = []
        self.image_side: list[torch.Tensor] = []
        self.video_side: list[torch.Tensor] = []

    def install(self) -> list:
        def keep(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
            self._inputs.append((hidden.detach(), cu, kwargs["position_embeddings"]))

        return [self.attention.register_forward_pre_hook(keep, with_kwargs=True)]

    def clear(self) -> None:
        self._inputs.clear()
        self.image_side.clear()
        self.video_side.clear()

    def _side(self) -> torch.Tensor:
        hidden, cu, (cos, sin) = self._inputs.pop()
        self._inputs.clear()
        attention = self.attention
        q, k, _ = attention.qkv(hidden).reshape(hidden.shape[0], 3, attention.num_heads, -1).unbind(1)
        cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
        q = q.float() * cos + _rotate_half(q.float()) * sin
        k = k.float() * cos + _rotate_half(k.float()) * sin
        scores = []
        for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):  # one attention segment at a time
            qs, ks = q[start:end].transpose(0, 1), k[start:end].transpose(0, 1)
            weights = torch.softmax(qs @ ks.transpose(-1, -2) * attention.scaling, dim=-1)
            scores.append(weights.sum(0).mean(0))
        score = torch.cat(scores).view(-1, self.group).sum(-1)
        metric = k.mean(1).view(-1, self.group, k.shape[-1]).mean(1)
        return torch.cat([score.unsqueeze(-1), metric], dim=-1)

    def after_images(self, **_) -> None:
        self.image_side.append(self._side())

    def after_videos(self, **_) -> None:
        self.video_side.append(self._side())


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
