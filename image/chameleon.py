"""Lumina-mGPT text-to-image on the Chameleon architecture, as an image family (Anole: :mod:`.anole`).

Chameleon (Chameleon Team 2024) is one decoder over a unified vocabulary of text BPE tokens and VQGAN image
tokens; Lumina-mGPT (Liu et al. 2024) and Anole (Chern et al. 2024) fine-tune it for image generation. The
model runs through ``transformers``' ``ChameleonForConditionalGeneration``, whose own forward masks every
image token's logit to -inf, so this adapter takes the last hidden state of the inner model and applies
``lm_head`` only to the image-token rows.

Generation layout (Alpha-VLLM/Lumina-mGPT, ``lumina_mgpt/data/item_processor.py`` and
``inference_solver.py``): the prompt is ``<bos>`` + "Generate an image of {w}x{h} according to the
following prompt:\\n{prompt}" + ``<reserved08706>`` (the turn separator); the model then writes
``<racm3:break>`` (image start), two size tokens ``<reserved{8800 + n:05d}>`` giving the height and the width
in units of two latent codes, the code grid with ``<reserved08799>`` closing every row (the last one too),
and ``<eoss>``. Everything before the grid is fixed by the resolution, so it is part of the prompt here;
the generated sequence is exactly the grid with its row ends. Guidance follows Lumina-mGPT's CFG processor:
the unconditional context is only the image start and the two size tokens.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import ChameleonForConditionalGeneration, PreTrainedModel

from mmaccel.models.base import ModelOutput, TokenPrompt, gather_last
from mmaccel.models.cache import SlotCache
from mmaccel.models.hf import HFCausalLM, slot_forward

from .chameleon_vq import ChameleonVQConfig, ChameleonVQDecoder
from .family import TokenLayout, hf_model_type, pixels_to_uint8, text_prompts
from .hf_folder import checked_config

PROMPT_TEMPLATE = "Generate an image of {width}x{height} according to the following prompt:\n{prompt}"
IMAGE_START = "<racm3:break>"
SEPARATOR = "<reserved08706>"
NEW_LINE = "<reserved08799>"
VQ_FILES = ("tokenizer/vqgan.ckpt", "vqgan.ckpt")  # Meta's release layout first, then a flat folder


def size_token(n: int) -> str:
    """Lumina-mGPT's token for a side of ``n`` units of two latent codes (32 px with Chameleon's VQGAN)."""
    return f"<reserved{8800 + n:05d}>"


class ChameleonImageLM(HFCausalLM):
    """A ``ChameleonForConditionalGeneration`` as a :class:`~mmaccel.models.TokenModel` over its image
    vocabulary: ids ``0..n_codes-1`` are VQ codes and ``n_codes`` the row-end token, mapped to the model's
    own token ids by ``image_ids``. Logits are computed for those rows of ``lm_head`` only, and the row-end
    layout is forced (the prompt lengths seen by :meth:`prefill` say which generated token each logit picks).
    """

    def __init__(self, model: PreTrainedModel, image_ids: torch.Tensor, layout: TokenLayout, uncond_ids: list[int]):
        super().__init__(model)
        if layout.row_end is not None and layout.row_end != image_ids.numel() - 1:
            raise ValueError(f"layout row_end {layout.row_end} must be the last compact id ({image_ids.numel() - 1})")
        self.vocab_size = int(image_ids.numel())
        self.layout = layout
        self.uncond_ids = list(uncond_ids)
        self._image_ids = image_ids.long().cpu()
        self._prompt_len: torch.Tensor | None = None

    def image_ids(self) -> torch.Tensor:
        """``[vocab_size]`` the model's token id of each compact id, on the model's device."""
        if self._image_ids.device != self.device:
            self._image_ids = self._image_ids.to(self.device)
        return self._image_ids

    def unconditional_prompt(self, prompt: TokenPrompt) -> TokenPrompt:
        """The family's unconditional context (Lumina-mGPT: the image start and size tokens alone)."""
        b = prompt.batch_size
        ids = torch.tensor(self.uncond_ids, dtype=torch.long).expand(b, -1).clone()
        return TokenPrompt(ids, torch.full((b,), len(self.uncond_ids), dtype=torch.long))

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor, cache: SlotCache) -> torch.Tensor:
        return slot_forward(self.model.model, positions, cache, input_ids=ids).last_hidden_state

    def _logits(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        head = self.model.lm_head.weight.index_select(0, self.image_ids())
        logits = self.layout.constrain(F.linear(hidden, head).float(), index)
        # Masked slots are equal in the cond and uncond rows; a finite floor keeps u + s (c - u) from
        # turning them into NaN (-inf - -inf) under guidance.
        return logits.clamp(min=torch.finfo(logits.dtype).min)

    @torch.no_grad()
    def prefill(self, prompt: TokenPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        hidden = gather_last(self._hidden(ids, positions, cache), prompt.lengths)
        self._prompt_len = prompt.lengths.to(self.device)
        index = torch.zeros(ids.shape[0], 1, dtype=torch.long, device=self.device)
        return ModelOutput(self._logits(hidden, index), hidden if output_hidden else None)

    def reorder(self, cache: SlotCache, rows: torch.Tensor) -> None:
        """Keep batch ``rows`` (finished samples leaving the batch): the cache and each row's prompt length."""
        cache.reorder(rows)
        self._prompt_len = self._prompt_len.index_select(0, rows.to(self.device))

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        if self._prompt_len is None or self._prompt_len.shape[0] != tokens.shape[0]:
            raise RuntimeError("ChameleonImageLM.forward needs a prefill of the same batch first")
        hidden = self._hidden(self.image_ids()[tokens], positions, cache)
        # The logits at position t choose generated token t + 1 - prompt_len.
        index = positions + 1 - self._prompt_len[:, None]
        return ModelOutput(self._logits(hidden, index), hidden if output_hidden else None)

    def embedding_table(self) -> torch.Tensor:
        """The model's input embeddings of the image tokens, the row-end row placed far from every code."""
        table = self.model.get_input_embeddings().weight.detach()
        codes = self.image_ids()[:-1] if self.layout.row_end is not None else self.image_ids()
        return self.layout.with_row_end(table.index_select(0, codes))


# ------------------------------------------------------------------------------------------------ loading


def _is_chameleon(folder: Path) -> bool:
    return hf_model_type(folder) == "chameleon"


def _checkpoint_tensors(folder: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Read ``keys`` from the folder's (possibly sharded) safetensors checkpoint."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
    else:
        weight_map = dict.fromkeys(keys, "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        with safe_open(str(folder / weight_map[key]), framework="pt") as f:
            out[key] = f.get_tensor(key)
    return out


def load_chameleon(folder: Path) -> ChameleonForConditionalGeneration:
    """Load a Chameleon / Lumina-mGPT / Anole folder with ``transformers``, accepting Lumina-mGPT's qk-norm.

    Lumina-mGPT stores each attention's ``q_norm`` / ``k_norm`` as ``[model_parallel_size, head_dim]`` and
    repeat-interleaves it over the heads at run time (Alpha-VLLM/Lumina-mGPT,
    ``lumina_mgpt/model/chameleon/modeling_chameleon.py``); ``transformers`` keeps one row per head. Those
    weights are expanded the same way; any other shape mismatch or missing language-model weight raises.
    """
    # transformers' own load report would call the grouped norms "reinitialised"; the checks below replace it.
    report = logging.getLogger("transformers.modeling_utils")
    level = report.level
    report.setLevel(logging.ERROR)
    try:
        model, info = ChameleonForConditionalGeneration.from_pretrained(
            folder, dtype="auto", ignore_mismatched_sizes=True, output_loading_info=True
        )
    finally:
        report.setLevel(level)
    problems, expand = [], {}
    for key, ckpt_shape, model_shape in sorted(info["mismatched_keys"]):
        ckpt_shape, model_shape = tuple(ckpt_shape), tuple(model_shape)
        grouped = (
            re.search(r"\.[qk]_norm\.(weight|bias)$", key)
            and len(ckpt_shape) == 2
            and ckpt_shape[1] == model_shape[1]
            and model_shape[0] % ckpt_shape[0] == 0
        )
        if grouped:
            expand[key] = model_shape[0] // ckpt_shape[0]
        else:
            problems.append(f"{key}: checkpoint {ckpt_shape} vs model {model_shape}")
    # The VQ encoder is not used here (and Lumina-mGPT may drop it); every other weight must be present.
    problems += [f"missing {key}" for key in sorted(info["missing_keys"]) if not key.startswith("model.vqmodel.")]
    if problems:
        raise ValueError(
            f"{folder} does not fit its config.json (ChameleonForConditionalGeneration):\n  "
            + "\n  ".join(problems[:10])
        )
    if expand:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in _checkpoint_tensors(folder, list(expand)).items():
                params[key].copy_(value.repeat_interleave(expand[key], dim=0))
    return model.eval()


def load_text_tokenizer(folder: Path):
    """The folder's text tokenizer: ``tokenizer.json`` (HF layout) or ``tokenizer/text_tokenizer.json`` (Meta's)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    meta = folder / "tokenizer" / "text_tokenizer.json"
    if meta.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(meta), bos_token="<s>")
    raise FileNotFoundError(
        f"{folder} has no text tokenizer: expected tokenizer.json (+ tokenizer_config.json; Lumina-mGPT-7B-512 "
        f"and -1024 ship without one, use Alpha-VLLM/Lumina-mGPT-7B-768's) or tokenizer/text_tokenizer.json"
    )


def _default_image_size(folder: Path, config) -> int:
    # Lumina-mGPT releases name their resolution (Lumina-mGPT-7B-768); otherwise the VQGAN's own resolution.
    match = re.search(r"(?<!\d)(512|768|1024)(?!\d)", folder.name)
    return int(match.group(1)) if match else int(config.vq_config.resolution)


# ------------------------------------------------------------------------------------------------- family


class ChameleonFamily:
    """Lumina-mGPT (Liu et al. 2024) text-to-image on Chameleon (Chameleon Team 2024): the unified-vocabulary
    decoder restricted to its image tokens, rows closed by an end-of-line token,
    and the Chameleon VQGAN decoder (from the official ``tokenizer/vqgan.ckpt``, optional for token generation).
    """

    name = "chameleon"
    conditioning = "text"
    always_guided = False
    row_ends = True  # Lumina-mGPT closes every row with an end-of-line token
    expected_files = (
        "config.json with model_type 'chameleon' + model*.safetensors + tokenizer.json "
        "(+ tokenizer/vqgan.ckpt and vqgan.yaml to decode)"
    )

    def __init__(
        self,
        model: ChameleonForConditionalGeneration,
        tokenizer,
        image_size: int | tuple[int, int] = 512,
        vq: ChameleonVQDecoder | None = None,
        cache_dir: Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.vq = vq.eval() if vq is not None else None
        self.cache_dir = cache_dir
        self.draft = None
        self._vocab = dict(model.config.vocabulary_map or {})
        mapping = model.model.vocabulary_mapping
        n_codes = len(mapping.image_tokens)
        if n_codes == 0 or sorted(set(mapping.bpe2img.values())) != list(range(n_codes)):
            raise ValueError("config.json vocabulary_map must name image tokens IMGIMG* for codes 0..n-1")
        self.n_codes = n_codes
        image_ids = mapping.img2bpe_mapping_tensor.long()
        if self.row_ends:
            image_ids = torch.cat([image_ids, torch.tensor([self.token_id(NEW_LINE)])])
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else model.config.bos_token_id
        if self.bos_id is None:
            raise ValueError("neither the tokenizer nor config.json gives a BOS token id")
        vq_cfg = vq.config if vq is not None else ChameleonVQConfig.from_hf(model.config.vq_config)
        if vq is not None and vq_cfg.n_embed != n_codes:
            raise ValueError(f"the VQGAN codebook has {vq_cfg.n_embed} codes but vocabulary_map has {n_codes}")
        self.downsample = vq_cfg.downsample
        placeholder = TokenLayout(1, 1, row_end=n_codes if self.row_ends else None)  # set_image_size sets it
        self.model = ChameleonImageLM(model, image_ids, placeholder, [])
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.set_image_size(*size)

    # --------------------------------------------------------------------------------------- recognition
    @classmethod
    def matches(cls, path: Path) -> bool:
        return Path(path).is_dir() and _is_chameleon(Path(path))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        image_size: int | tuple[int, int] | None = None,
    ) -> ChameleonFamily:
        """Load an HF Chameleon folder (Lumina-mGPT, Anole); ``image_size`` in pixels, default from the folder
        name (``...-768``) or the VQGAN resolution. Without ``vqgan.ckpt`` tokens generate but do not decode."""
        folder = Path(path)
        checked_config(folder, "chameleon", "Chameleon", cls.expected_files)
        tokenizer = load_text_tokenizer(folder)
        model = load_chameleon(folder)
        vq = None
        ckpt = next((folder / name for name in VQ_FILES if (folder / name).is_file()), None)
        if ckpt is not None:
            yaml_path = ckpt.with_name("vqgan.yaml")
            vq_config = yaml_path if yaml_path.is_file() else ChameleonVQConfig.from_hf(model.config.vq_config)
            vq = ChameleonVQDecoder.from_checkpoint(ckpt, vq_config)
        size = image_size if image_size is not None else _default_image_size(folder, model.config)
        return cls(model, tokenizer, size, vq, cache_dir=folder).to(device)

    def to(self, device: str | torch.device) -> ChameleonFamily:
        self.model.model.to(device)
        if self.vq is not None:
            self.vq.to(device)
        return self

    # -------------------------------------------------------------------------------------------- layout
    def token_id(self, name: str) -> int:
        """The model's id of special token ``name`` (from config.json's vocabulary_map)."""
        if name not in self._vocab:
            raise ValueError(f"config.json vocabulary_map has no token {name!r}")
        return int(self._vocab[name])

    def set_image_size(self, height: int, width: int) -> None:
        """Generate ``height`` x ``width`` pixel images: sets the grid, the size tokens and the prompt text."""
        f = 2 * self.downsample  # a size token counts two latent codes
        if height < f or width < f or height % f or width % f:
            raise ValueError(f"image height and width must be positive multiples of {f} px, got {height} x {width}")
        self.image_size = (height, width)
        self.layout = TokenLayout(height // self.downsample, width // self.downsample, row_end=self.n_codes)
        prefix = [
            self.token_id(IMAGE_START),
            self.token_id(size_token(height // f)),
            self.token_id(size_token(width // f)),
        ]
        self.model.layout, self.model.uncond_ids = self.layout, prefix

    @property
    def num_classes(self) -> None:
        return None

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None) -> TokenPrompt:
        height, width = self.image_size
        rows = []
        for text in text_prompts(class_labels, prompts, "Lumina-mGPT"):
            words = PROMPT_TEMPLATE.format(width=width, height=height, prompt=text)
            ids = self.tokenizer.encode(words, add_special_tokens=False)
            rows.append([self.bos_id, *ids, self.token_id(SEPARATOR), *self.model.uncond_ids])
        return TokenPrompt.from_lists(rows)

    # ------------------------------------------------------------------------------------------- outputs
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.vq is None:
            raise FileNotFoundError(
                f"decoding needs Chameleon's VQGAN: put {' or '.join(VQ_FILES)} (with vqgan.yaml) in "
                f"{self.cache_dir}; the generated tokens themselves do not need it"
            )
        grid = self.layout.to_grid(tokens.to(self.model.device))
        return pixels_to_uint8(self.vq.decode_code(grid))

    def codebook(self) -> torch.Tensor:
        if self.vq is not None:
            table = self.vq.codebook()
        else:  # the quantiser inside the HF checkpoint holds the same codebook as vqgan.ckpt
            table = self.model.model.model.vqmodel.quantize.embedding.weight.detach()
        return self.layout.with_row_end(table.float())

    def token_embeddings(self) -> torch.Tensor:
        return self.model.embedding_table()


__all__ = ["ChameleonFamily", "ChameleonImageLM", "load_chameleon", "size_token"]
