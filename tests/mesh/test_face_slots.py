"""The face-slot GPT (the core's ``SlotLlama`` in the face layout): each token's slot comes from its position
alone, a plain GPT's weights load into it with the same logits, it saves and loads as itself, and every lossless
method stays token-identical to AR on it (windows and tree nodes get their slots from the positions the engine
gives them)."""

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from mmaccel.mesh.data import NUM_CLASSES, make_dataset, make_shape
from mmaccel.mesh.methods import parse_mesh_method
from mmaccel.mesh.model import load_mesh_gpt, mesh_config, with_face_slots
from mmaccel.mesh.pipeline import MeshARPipeline
from mmaccel.mesh.tokenizer import TOKENS_PER_FACE, MeshVocab, decode, encode, sequence
from mmaccel.mesh.training import train_gpt
from mmaccel.models.slot_llama import SlotLlama

VOCAB = MeshVocab(128, NUM_CLASSES)


def _sequence() -> torch.Tensor:
    shapes, labels = make_dataset(1, 7, VOCAB.levels)
    return torch.from_numpy(sequence(shapes[0], int(labels[0]), VOCAB))[None]


def test_a_slot_is_the_corner_and_coordinate_of_the_position():
    model = SlotLlama(mesh_config("mesh-tiny", VOCAB, 36, face_slots=True))
    slots = model.slot(torch.arange(2 + 2 * TOKENS_PER_FACE + 1)).tolist()
    assert slots[:2] == [TOKENS_PER_FACE] * 2  # class, bos
    assert slots[2:11] == list(range(9)) and slots[11:20] == list(range(9))
    assert slots[20] == 0  # eos sits where the next face would start


def test_a_plain_gpt_loads_with_a_zero_table_and_the_same_logits():
    torch.manual_seed(0)
    plain = LlamaForCausalLM(mesh_config("mesh-tiny", VOCAB, 36)).eval()
    slotted = with_face_slots(plain).eval()
    x = _sequence()
    assert torch.equal(slotted(input_ids=x).logits, plain(input_ids=x).logits)
    torch.nn.init.normal_(slotted.slots.weight)  # the control: the table does reach the logits
    assert not torch.allclose(slotted(input_ids=x).logits, plain(input_ids=x).logits)


def test_slots_follow_explicit_positions_not_the_call_shape(slots_model_dir):
    """A window at positions 11.. (one call of 5 tokens) gives the logits the full sequence gives there."""
    model = load_mesh_gpt(slots_model_dir).model
    x = _sequence()[:, :16]
    full = model(input_ids=x).logits[:, 11:]
    prefix = model(input_ids=x[:, :11], use_cache=True)
    window = model(input_ids=x[:, 11:], position_ids=torch.arange(11, 16)[None], cache=prefix.past_key_values).logits
    assert torch.allclose(window, full, atol=1e-5)


def test_the_slot_gpt_saves_and_loads_as_itself(slots_model_dir):
    gpt = load_mesh_gpt(slots_model_dir)
    assert isinstance(gpt.model, SlotLlama) and gpt.model.config.slot_period == TOKENS_PER_FACE
    assert float(gpt.model.slots.weight.detach().abs().sum()) > 0


def _prefixes():
    box, _ = decode(encode(make_shape("box", np.random.default_rng(0)))[: 2 * TOKENS_PER_FACE], VOCAB)
    return [None, box, None]


@pytest.mark.parametrize(
    "spec", ["sjd", "sjd:init=face", "mc-sjd:init=face", "sjd:window=3", "xspec", "xspec:tree=2x2x1", "xspec:tail=4"]
)
def test_lossless_methods_match_ar_greedily_on_the_slot_gpt(slots_model_dir, spec):
    pipe = MeshARPipeline.from_pretrained(slots_model_dir)
    name, params = parse_mesh_method(spec)

    def run(method, **p):
        return pipe(
            [4, 0, 2],
            method=method,
            seed=3,
            progress=False,
            max_faces=2,
            prefix=_prefixes(),
            temperature=0.0,
            guidance_scale=2.0,
            **p,
        )

    ar, out = run("ar"), run(name, **params)
    assert torch.equal(out.tokens, ar.tokens)
    assert all(s["steps"] <= a["steps"] for s, a in zip(out.stats, ar.stats))
    if spec.endswith("init=face"):
        # Face copies are right on this model, so windows commit several tokens: their positions past the first
        # were read with their own slots (a window read with its first token's slot everywhere accepts none).
        assert sum(s["steps"] for s in out.stats) < sum(a["steps"] for a in ar.stats)


def test_train_gpt_adds_slots_to_a_fresh_model(tmp_path, capsys):
    train_gpt.main(
        [
            "--config",
            "mesh-tiny",
            "--face-slots",
            "--minutes",
            "0.4",
            "--out",
            str(tmp_path / "out"),
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--batch-size",
            "4",
        ]
    )
    assert "final:" in capsys.readouterr().out
    gpt = load_mesh_gpt(tmp_path / "out")
    assert isinstance(gpt.model, SlotLlama)
    assert float(gpt.model.slots.weight.detach().abs().sum()) > 0  # trained away from its zero start


def test_a_slot_layout_other_than_the_faces_is_refused(slots_model_dir, tmp_path):
    import json

    from mmaccel.checkpoint import CheckpointError

    (tmp_path / "gpt.safetensors").write_bytes((slots_model_dir / "gpt.safetensors").read_bytes())
    meta = json.loads((slots_model_dir / "gpt_config.json").read_text())
    meta["llama"]["slot_period"] = 64
    (tmp_path / "gpt_config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="slots of period 64"):
        load_mesh_gpt(tmp_path)
