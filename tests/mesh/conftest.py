"""A tiny random mesh model (Llama GPT + draft heads) saved to disk, for pipeline, CLI and lossless tests."""

import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from mmaccel.drafting.heads import DraftHeads
from mmaccel.mesh.data import NUM_CLASSES
from mmaccel.mesh.model import mesh_config, save_mesh_gpt
from mmaccel.mesh.tokenizer import MeshVocab

TINY_FACES = 4
torch.set_num_threads(1)  # two shared cores: more threads only contend


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_mesh_model")
    vocab = MeshVocab(128, NUM_CLASSES)
    gpt = LlamaForCausalLM(mesh_config("mesh-tiny", vocab, TINY_FACES))
    save_mesh_gpt(gpt, vocab, TINY_FACES, folder)
    heads = DraftHeads(gpt.config.hidden_size, vocab.size, num_heads=3)
    for p in heads.parameters():  # random heads, so drafts are sometimes right and sometimes wrong
        torch.nn.init.normal_(p, std=0.5)
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(folder / "heads.safetensors"))
    return folder


@pytest.fixture(scope="session")
def hinted_model_dir(model_dir, tmp_path_factory):
    """The same tiny GPT with random hinted heads (each reads the face-structure copy of its token)."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tiny_mesh_hinted")
    for name in ("gpt.safetensors", "gpt_config.json"):
        shutil.copy(model_dir / name, folder / name)
    gpt = LlamaForCausalLM(mesh_config("mesh-tiny", MeshVocab(128, NUM_CLASSES), TINY_FACES))
    heads = DraftHeads(gpt.config.hidden_size, MeshVocab(128, NUM_CLASSES).size, num_heads=3, hinted=True)
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(folder / "heads.safetensors"))
    return folder


@pytest.fixture(scope="session")
def slots_model_dir(tmp_path_factory):
    """A tiny face-slot GPT (the core's ``SlotLlama``) whose slot table is random, so every logit depends on the slot
    the engine's positions give each token; with random heads."""
    from mmaccel.models.slot_llama import SlotLlama

    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("tiny_mesh_slots")
    vocab = MeshVocab(128, NUM_CLASSES)
    gpt = SlotLlama(mesh_config("mesh-tiny", vocab, TINY_FACES, face_slots=True))
    torch.nn.init.normal_(gpt.slots.weight, std=1.0)
    save_mesh_gpt(gpt, vocab, TINY_FACES, folder)
    heads = DraftHeads(gpt.config.hidden_size, vocab.size, num_heads=3)
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(folder / "heads.safetensors"))
    return folder
