"""LLaMA-Mesh: OBJ text parsing and writing, the previous-line Jacobi init, and a tiny random LlamaForCausalLM
with a locally built tokenizer (no download) loaded from a folder and decoded greedily token-identically to AR by
the lossless methods at batch 2 with different prompt lengths."""

import json

import numpy as np
import pytest
import torch
import trimesh
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mmaccel.checkpoint import CheckpointError
from mmaccel.mesh.llama_mesh import LineInit, LlamaMeshPipeline, format_obj, parse_obj

WORDS = ["create", "a", "3d", "model", "of", "cube", "pyramid", "in", "obj", "format", "user", "assistant", ":"]
SPECIAL = ["<unk>", "<|begin_of_text|>", "<|eot_id|>"]
TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}user: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)
TETRA = """Here is a tetrahedron:
v 0 0 0
v 63 0 0
v 0 63 0
v 0 0 63
f 1 3 2
f 1/1 2/2 4/4
f 1 4 3
f -3 -2 -1
f 1 2 9
v 1 two 3
"""


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = SPECIAL + WORDS + ["v", "f", " ", "\n", "/", "-"] + [str(i) for i in range(200)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    # Numbers, words, single spaces and newlines are tokens of their own, as Llama 3's tokenizer splits OBJ lines.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d+|[a-z]+|\s|[^\s\w]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|eot_id|>")
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama_mesh")
    tok = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_parse_obj_reads_the_obj_inside_the_answer():
    mesh, report = parse_obj(TETRA)  # "f -3 -2 -1" is "f 2 3 4" (negative: from the last vertex)
    assert report.faces_read == 4 and report.faces_kept == 4 and report.valid
    assert report.bad_tokens == 2  # the face naming vertex 9 and the vertex "two"
    assert np.isclose(mesh.volume, 1 / 6) and mesh.bounds.tolist() == [[-0.5] * 3, [0.5] * 3]


def test_a_closed_obj_is_valid_and_round_trips():
    mesh, report = parse_obj(TETRA)
    again = format_obj(mesh)
    assert format_obj(parse_obj(again)[0]) == again
    assert again.splitlines()[0] == "v 0 0 0" and again.count("\nf ") == 4
    box = trimesh.creation.box()
    back, report = parse_obj(format_obj(box))
    assert report.valid and len(back.faces) == 12


def test_parse_obj_never_raises_on_garbage():
    for text in ["", "f 1 2 3", "v 1 2\nf a b c", "hello\n" * 3]:
        mesh, report = parse_obj(text)
        assert not report.valid and report.faces_kept == 0 and "no valid face" in report.errors


def test_line_init_copies_the_previous_line():
    init = LineInit([9], vocab=50)
    # generated: "v 1 2 3 NL v 1 2 ..." with token ids: v=5, space=8, NL=9
    context = torch.tensor([[5, 8, 1, 8, 2, 8, 3, 9, 5, 8, 1, 8, 2, 0, 0, 0, 0, 0, 0, 0, 0]])
    context = torch.cat([context, torch.tensor([[9, 5, 8, 1, 9] + [0] * 16])])  # second row: one line only
    index = torch.tensor([[13, 14, 15, 16, 17, 18], [5, 6, 7, 8, 9, 10]])
    out = init(context, index, torch.full((2, 6), 0.999))
    assert out[0].tolist() == [8, 3, 9, 5, 8, 1]  # the rest of "v 1 2 3 NL" then the next line's start
    assert out[1].tolist() == [5, 8, 1, 9, 5, 8]  # "NL v 1 NL": lines of 4, copied one line back


def test_from_pretrained_refuses_a_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        LlamaMeshPipeline.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize("spec", ["sjd", "sjd:init=line", "sjd:window=4:init=line"])
def test_greedy_methods_match_ar_at_batch_2(folder, spec):
    pipe = LlamaMeshPipeline.from_pretrained(folder)
    prompts = ["create a cube", "create a 3d model of a pyramid in obj format"]
    assert len(set(pipe.prompt(prompts).lengths.tolist())) == 2
    ar = pipe(prompts, method="ar", max_new_tokens=24, temperature=0.0, progress=False)
    out = pipe(prompts, method=spec, max_new_tokens=24, temperature=0.0, progress=False)
    assert torch.equal(out.tokens, ar.tokens)
    assert out.texts == ar.texts and len(out.meshes) == 2
    assert all(s["steps"] <= a["steps"] for s, a in zip(out.stats, ar.stats))


def test_cli_family_llama_mesh_writes_mesh_render_answer_and_stats(folder, tmp_path, capsys):
    from mmaccel.cli import main

    out = tmp_path / "cube.obj"
    argv = ["generate", "mesh", "--family", "llama-mesh", "--model", str(folder), "--prompt", "create a cube"]
    code = main([*argv, "--max-new-tokens", "16", "--temperature", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    stats = json.loads((tmp_path / "cube.json").read_text())
    assert stats["family"] == "llama-mesh" and stats["method"] == "sjd:init=line" and stats["tokens"] == 16
    pipe = LlamaMeshPipeline.from_pretrained(folder)
    ar = pipe(["create a cube"], method="ar", max_new_tokens=16, temperature=0.0, progress=False)
    assert (tmp_path / "cube.txt").read_text() == ar.texts[0]  # greedy sjd:init=line wrote AR's answer
    names = {p.name for p in tmp_path.iterdir()}
    assert {"cube.json", "cube.png", "cube.txt"} <= names and ("cube.obj" in names) == bool(stats["faces"])


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--prompt", "a cube", "--class", "cone"], ["--class", "--prompt"]),
        ([], ["--prompt"]),
        (["--prompt", "a cube", "--method", "xspec"], ["xspec"]),
        (["--prompt", "a cube", "--max-faces", "3"], ["--max-faces"]),
        (["--prompt", "a cube", "--max-new-tokens", "0"], ["--max-new-tokens"]),
    ],
)
def test_cli_family_refuses_bad_input_and_writes_nothing(folder, tmp_path, capsys, extra, words):
    from mmaccel.cli import main

    out = tmp_path / "out"
    out.mkdir()
    code = main(
        ["generate", "mesh", "--family", "llama-mesh", "--model", str(folder), *extra, "--out", str(out / "x.obj")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and all(w in err for w in words), err
    assert list(out.iterdir()) == []


def test_cli_family_refuses_a_folder_without_config(tmp_path, capsys):
    from mmaccel.cli import main

    code = main(
        [
            "generate",
            "mesh",
            "--family",
            "llama-mesh",
            "--model",
            str(tmp_path / "none"),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "x.obj"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "config.json" in err and not (tmp_path / "x.obj").exists()
    code = main(
        [
            "generate",
            "mesh",
            "--family",
            "meshgpt",
            "--model",
            str(tmp_path),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "x.obj"),
        ]
    )
    assert code == 2 and "llama-mesh" in capsys.readouterr().err
