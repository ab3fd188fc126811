"""Janus-Pro (DeepSeek, Chen et al. 2025, "Janus-Pro: Unified Multimodal Understanding and Generation with Data
and Model Scaling") as a text-to-image family, through transformers' ``JanusForConditionalGeneration``
(checkpoints in its layout, e.g. ``deepseek-community/Janus-Pro-1B`` / ``-7B``).

Janus generates images with its own pathway beside the text one: image tokens enter the language model through
``generation_embeddings`` + ``generation_aligner`` and are scored by ``generation_head``, never by the text
embedding or ``lm_head``. Its vocabulary is therefore the VQ codebook itself (16384 codes, a 24 x 24 grid at
384 px), with no row-end token and no mapping of ids.

The prompt is Janus' generation prompt: the SFT conversation ``<|User|>: {text}\\n\\n<|Assistant|>:`` (what
Janus' ``apply_sft_template_for_multi_turn_prompts`` and transformers' Janus chat template write for one user
turn), the image start token ``<begin_of_image>``, and the tokenizer's BOS in front. Janus always samples with
classifier-free guidance; its unconditional prompt keeps BOS and the image start token and replaces every token in
between with the pad token (official ``tokens[1:-1] = pad_id``; transformers' ``generate`` masks the same tokens).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmaccel.models import ModelOutput, SlotCache, TokenPrompt
from mmaccel.models.base import gather_last
from mmaccel.models.hf import slot_forward

from .family import TokenLayout, hf_model_type, text_prompts
from .hf_folder import checked_config, load_complete

#: Janus' SFT format for one user turn followed by the assistant's (empty) turn.
SFT_TEMPLATE = "<|User|>: {text}\n\n<|Assistant|>:"
# Janus' special tokens, where neither the tokenizer's attributes nor the generation config name them.
IMAGE_START = "<begin_of_image>"
PAD = "<\uff5c\u2581pad\u2581\uff5c>"  # "<｜▁pad▁｜>", Janus' VLChatProcessor.pad_tag


class JanusImageLM:
    """Janus-Pro's language model over its image vocabulary (the VQ codes), driven through a :class:`SlotCache`.

    Prompts are text token ids, embedded with the text embedding; generated tokens are VQ codes, embedded with the
    generation embedding + aligner; logits come from the generation head. ``unconditional_prompt`` pads out each
    prompt's text between BOS and the image start token (same length, so both guidance rows stay aligned).
    """

    def __init__(self, model: Any, pad_id: int):
        self.hf_model = model.eval()
        self.janus = model.model
        self.language_model = self.janus.language_model
        self.vocab_size = int(model.config.vq_config.num_embeddings)
        self.pad_id = int(pad_id)

    @property
    def device(self) -> torch.device:
        return self.language_model.device

    def new_cache(self, batch_size: int, max_length: int) -> SlotCache:
        return SlotCache(max_length)

    def unconditional_prompt(self, prompt: TokenPrompt) -> TokenPrompt:
        """BOS, pad tokens in place of the text, the image start token: Janus' official CFG counterpart."""
        index = torch.arange(prompt.ids.shape[1], device=prompt.ids.device)
        text = (index >= 1) & (index < prompt.lengths.to(prompt.ids.device)[:, None] - 1)
        return TokenPrompt(prompt.ids.masked_fill(text, self.pad_id), prompt.lengths.clone())

    def _run(
        self, embeds: torch.Tensor, positions: torch.Tensor, cache: SlotCache, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image logits, last hidden state) of ``embeds`` at ``positions``; with ``lengths``, only each row's last
        prompt position is scored."""
        hidden = slot_forward(self.language_model, positions, cache, inputs_embeds=embeds).last_hidden_state
        if lengths is not None:
            hidden = gather_last(hidden, lengths)
        return self.janus.generation_head(hidden).float(), hidden

    @torch.no_grad()
    def prefill(self, prompt: TokenPrompt, cache: SlotCache, output_hidden: bool = False) -> ModelOutput:
        ids = prompt.ids.to(self.device)
        # Padding gets positions past each prompt's end; those slots are rewritten by the first step.
        positions = torch.arange(ids.shape[1], device=self.device).expand_as(ids)
        embeds = self.janus.get_input_embeddings()(ids)
        logits, hidden = self._run(embeds, positions, cache, prompt.lengths)
        return ModelOutput(logits, hidden if output_hidden else None)

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: SlotCache, output_hidden: bool = False
    ) -> ModelOutput:
        embeds = self.hf_model.prepare_embeddings_for_image_generation(tokens)
        logits, hidden = self._run(embeds, positions, cache)
        return ModelOutput(logits, hidden if output_hidden else None)

    def embedding_table(self) -> torch.Tensor:
        """``[n_codes, embed_dim]``: Janus' generation embedding of each image token (before the aligner)."""
        return self.janus.generation_embeddings.weight.detach()


class JanusFamily:
    """Janus-Pro text-to-image (DeepSeek 2025): a Llama language model with a separate image-generation
    embedding and head over VQ-16 codes, classifier-free guidance always on, pixels from Janus' VQ decoder.
    The folder holds no draft; a smaller Janus checkpoint can be given as one (``from_pretrained(draft=...)``)."""

    name = "janus"
    conditioning = "text"
    # Janus samples every image with CFG (official cfg_weight 5); the pipeline's guidance_scale sets the scale and
    # both rows run even at scale 1.
    always_guided = True
    expected_files = "config.json with model_type 'janus' (JanusForConditionalGeneration), its weights and tokenizer"

    def __init__(self, model: Any, tokenizer: Any, cache_dir: Path | None = None):
        self.hf_model = model.eval()
        self.tokenizer = tokenizer
        self.vq = model.model.vqmodel
        self.n_codes = int(model.config.vq_config.num_embeddings)
        # JanusConfig sets num_patches = vision image_size // patch_size (24 for 384 px), the grid the VQ decodes.
        grid = int(model.config.vq_config.num_patches)
        self.layout = TokenLayout(grid, grid)
        self.draft = None
        self.cache_dir = cache_dir
        self.bos_id = self._token_id("bos", tokenizer.bos_token_id, model.config.text_config.bos_token_id)
        generation = getattr(model, "generation_config", None)
        boi = getattr(tokenizer, "boi_token", None) or IMAGE_START
        self.image_start_id = self._token_id(
            "image start", self._vocab_id(boi), getattr(generation, "boi_token_id", None)
        )
        pad = self._token_id(
            "pad", getattr(generation, "pad_token_id", None), self._vocab_id(PAD), tokenizer.pad_token_id
        )
        self.model = JanusImageLM(model, pad)

    def _vocab_id(self, token: str) -> int | None:
        return self.tokenizer.get_vocab().get(token)

    @staticmethod
    def _token_id(what: str, *candidates: int | None) -> int:
        for candidate in candidates:
            if candidate is not None:
                return int(candidate)
        raise ValueError(f"the Janus tokenizer and configs name no {what} token")

    # ---------------------------------------------------------------------------------------------- loading

    @classmethod
    def matches(cls, path: Path) -> bool:
        return hf_model_type(Path(path)) == "janus"

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> JanusFamily:
        from transformers import AutoTokenizer, JanusForConditionalGeneration

        folder = Path(path)
        checked_config(
            folder,
            "janus",
            "Janus-Pro",
            cls.expected_files,
            required=("vq_config", "text_config"),
            originals={"multi_modality": "deepseek-community/Janus-Pro-1B"},
        )
        # lm_head is tied to the text embedding; every other missing weight would leave part of Janus random.
        model = load_complete(JanusForConditionalGeneration, folder, "Janus", may_miss=("lm_head.weight",))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return cls(model, tokenizer, cache_dir=folder).to(device)

    # ------------------------------------------------------------------------------------------ the contract

    def to(self, device: str | torch.device) -> JanusFamily:
        self.hf_model.to(device)
        return self

    @property
    def num_classes(self) -> None:
        return None

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Janus' generation prompt ids for each text: BOS, the SFT conversation, the image start token."""
        strings = [SFT_TEMPLATE.format(text=text.strip()) for text in texts]
        encoded = self.tokenizer(strings, add_special_tokens=True)["input_ids"]
        # Janus' tokenizer adds BOS itself; one that does not still gets it, as Janus' prompts always start with it.
        return [([] if ids[:1] == [self.bos_id] else [self.bos_id]) + ids + [self.image_start_id] for ids in encoded]

    def prompt(self, class_labels: list[int] | None = None, prompts: list[str] | None = None) -> TokenPrompt:
        return TokenPrompt.from_lists(self.encode(text_prompts(class_labels, prompts, "Janus-Pro")), self.model.pad_id)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = self.layout.to_grid(tokens.to(self.model.device))
        if bool((grid < 0).any() | (grid >= self.n_codes).any()):
            raise ValueError(f"image tokens must lie in [0, {self.n_codes})")
        pixels = self.vq.decode(grid.flatten(1)).float()
        # Janus' generation script: clip((x + 1) / 2 * 255, 0, 255) then uint8 (transformers' postprocess agrees).
        return ((pixels + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()

    def codebook(self) -> torch.Tensor:
        # The decoder reads unit-normalised code vectors (JanusVQVAEVectorQuantizer.get_codebook_entry).
        return torch.nn.functional.normalize(self.vq.quantize.embedding.weight.detach().float(), dim=-1)

    def token_embeddings(self) -> torch.Tensor:
        return self.model.embedding_table()


__all__ = ["SFT_TEMPLATE", "JanusFamily", "JanusImageLM"]
