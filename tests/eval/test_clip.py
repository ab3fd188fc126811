"""``mmaccel eval clip`` on a tiny random CLIP folder (transformers' CLIPModel, a hand-made tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmaccel.cli import main


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor  # torchvision is unavailable here

    folder = tmp_path_factory.mktemp("tiny_clip")
    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    text = {**tower, "vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": bos, "eos_token_id": eos}
    config = CLIPConfig(text_config=text, vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_is_the_clipped_cosine_of_the_projected_embeddings(clip_folder, tmp_path, capsys):
    from transformers import CLIPModel, CLIPProcessor

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(images / f"{i:02d}.png")
    prompts = ["a red star", "two blue circles", "a green square"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "clip.json"
    args = [
        "eval",
        "clip",
        "--model",
        str(clip_folder),
        "--images",
        str(images),
        "--prompts",
        str(tmp_path / "prompts.txt"),
    ]
    assert main([*args, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    model, processor = CLIPModel.from_pretrained(clip_folder), CLIPProcessor.from_pretrained(clip_folder)
    with torch.no_grad():
        o = model(**processor(text=prompts, images=arrays, return_tensors="pt", padding=True))
    cos = torch.nn.functional.cosine_similarity(o.image_embeds, o.text_embeds)
    assert record["clip_score"] == pytest.approx(float((100 * cos.clamp(min=0)).mean()), abs=1e-4)
    assert "clip_score:" in capsys.readouterr().out


def test_clip_refusals(clip_folder, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(images / f"{i}.png")
    (tmp_path / "one.txt").write_text("a star\n")
    (tmp_path / "two.txt").write_text("a star\na circle\n")
    for args, words in (
        (["--model", str(tmp_path), "--prompts", str(tmp_path / "two.txt")], ["--model", "config.json"]),
        (["--model", str(clip_folder), "--prompts", str(tmp_path / "one.txt")], ["--prompts", "1 prompts", "2 images"]),
        (["--model", str(clip_folder), "--prompts", str(tmp_path / "none.txt")], ["--prompts", "none.txt"]),
    ):
        assert main(["eval", "clip", "--images", str(images), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mmaccel: error: ") and all(w in err for w in words), err
