import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    from transformers.utils import logging

    logging.set_verbosity_error()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random LLaVA checkpoint folder (processor included) and a question file of three held-out
    questions: ``(folder, questions)``."""
    import json

    from PIL import Image
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mmaccel.prune.testbed.questions import build_processor, heldout_questions

    folder = tmp_path_factory.mktemp("tiny_llava")
    processor = build_processor()
    processor.patch_size = 8
    tokenizer = processor.tokenizer
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    questions = folder / "questions.jsonl"
    lines = []
    for i, q in enumerate(heldout_questions(3)):
        Image.fromarray(q["image"]).save(folder / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "question": q["question"], "answer": q["answer"]}))
    questions.write_text("\n".join(lines))
    return folder, questions
