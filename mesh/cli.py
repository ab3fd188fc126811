"""``mmaccel generate mesh`` and ``mmaccel bench mesh``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.cli import (
    batch_sizes_argument,
    class_argument,
    count_argument,
    method_specs,
    output_files,
    param_argument,
    with_method_help,
)
from mmaccel.io import check_writable, save_image_atomic, write_atomic, write_json_atomic

#: The mesh Jacobi initialisations (methods.mesh_inits), named here so registration imports no torch.
INIT_NAMES = ("random", "face")
MESH_SUFFIXES = (".obj", ".ply", ".glb")
#: Real mesh families ``--family`` loads from a local folder, and the method each uses when ``--method`` is not given
#: (``init=line``: the previous OBJ line's tokens start the new window positions, mmaccel.mesh.llama_mesh).
FAMILIES = {"llama-mesh": "sjd:init=line", "meshanything": "sjd"}
BENCH_METHODS = "ar,sjd,sjd:init=face,xspec,xspec:rule=typical,gsd"
FAMILY_BENCH_METHODS = "ar,sjd,sjd:init=strip,mc-sjd"
#: Flags of the default mesh GPT that a family does not take (flag -> argparse dest).
GPT_ONLY = {
    "--class": "class_id",
    "--prefix": "prefix",
    "--max-faces": "max_faces",
    "--guidance-scale": "guidance_scale",
}


def _say(what: str, s: dict, method: str, mesh_path: Path | None, *others: Path) -> None:
    """One line per mesh: its size, validity, forwards against AR's and the files written."""
    written = str(mesh_path) if mesh_path is not None else f"(no mesh: {', '.join(s['report']['errors'])})"
    print(
        f"{what} seed {s['seed']}: {s['faces']} faces, valid {s['valid']}; {method}: {s['steps_to_end']} forwards "
        f"to the end vs {s['end_tokens']} for AR ({s['step_compression_to_end']:.2f}x); wrote "
        + ", ".join([written, *map(str, others)])
    )


def _generate_family(args: argparse.Namespace) -> int:
    """``--family llama-mesh --model DIR --prompt TEXT``: LLaMA-Mesh's OBJ answer, parsed into a mesh."""
    from mmaccel.methods import parse_method

    from .llama_mesh import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, LlamaMeshPipeline
    from .render import render
    from .tokenizer import write_mesh

    if args.family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}, got {args.family!r}")
    takes = "--condition" if args.family == "meshanything" else "--prompt"
    for flag, dest in GPT_ONLY.items():
        if getattr(args, dest) is not None:
            raise ValueError(f"{flag} is for the default mesh GPT; --family {args.family} takes {takes}")
    if args.model is None:
        raise ValueError(f"--family {args.family} needs --model (a local folder of the family's weights)")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.family == "meshanything":
        return _generate_meshanything(args)
    if args.condition:
        raise ValueError("--condition is for --family meshanything; --family llama-mesh takes --prompt")
    if not args.prompt:
        raise ValueError(f"--family {args.family} needs --prompt (repeatable: one mesh per prompt)")
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    prompts = list(args.prompt) * count_argument(args.num_meshes, "--num-meshes")
    paths = output_files(args.out, len(prompts), MESH_SUFFIXES, "mesh", (".png", ".json", ".txt"))
    # --param values join the spec, so one parse types and checks them before the model is loaded.
    spec = (args.method or FAMILIES[args.family]) + "".join(f":{k}={v}" for k, v in args.param or [])
    parse_method(spec, "--method")
    temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    pipe = LlamaMeshPipeline.from_pretrained(args.model)
    result = pipe(
        prompts,
        method=spec,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        progress=True,
    )
    for i, (mesh_path, png_path, json_path, text_path) in enumerate(paths):
        mesh, s = result.meshes[i], {"family": args.family, "model": str(args.model), "prompt": prompts[i]}
        s.update(result.stats[i], method=spec)
        if len(mesh.faces):
            write_mesh(mesh, mesh_path)
        save_image_atomic(render(mesh), png_path)
        write_atomic(text_path, lambda tmp, text=result.texts[i]: Path(tmp).write_text(text, encoding="utf-8"))
        write_json_atomic(json_path, s)
        _say(args.family, s, spec, mesh_path if len(mesh.faces) else None, png_path, json_path, text_path)
    return 0


def _generate_meshanything(args: argparse.Namespace) -> int:
    """``--family meshanything --model DIR --condition MESH``: MeshAnything V2's artist mesh of each conditioning
    mesh (its point cloud, sampled as the official code does)."""
    from mmaccel.methods import parse_method

    from .meshanything import DEFAULT_TOP_K, DEFAULT_TOP_P, MeshAnythingPipeline
    from .render import render
    from .tokenizer import read_mesh, write_mesh

    if args.prompt:
        raise ValueError("--prompt is for --family llama-mesh; --family meshanything takes --condition")
    if not args.condition:
        raise ValueError("--family meshanything needs --condition (a mesh file to remesh; repeatable)")
    sources = []
    for path in args.condition:
        try:
            sources.append(read_mesh(path))
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"--condition: {err}") from None
    sources = sources * count_argument(args.num_meshes, "--num-meshes")
    paths = output_files(args.out, len(sources), MESH_SUFFIXES, "mesh", (".png", ".json"))
    spec = (args.method or FAMILIES[args.family]) + "".join(f":{k}={v}" for k, v in args.param or [])
    parse_method(spec, "--method")
    temperature = 1.0 if args.temperature is None else args.temperature
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    pipe = MeshAnythingPipeline.from_pretrained(args.model)
    limit = pipe.max_new_tokens()
    max_new_tokens = limit if args.max_new_tokens is None else args.max_new_tokens
    if max_new_tokens > limit:
        raise ValueError(f"--max-new-tokens must be <= {limit} (the model's context after its prefix)")
    result = pipe(
        sources,
        method=spec,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=DEFAULT_TOP_K if args.top_k is None else args.top_k,
        top_p=DEFAULT_TOP_P if args.top_p is None else args.top_p,
        seed=args.seed,
        progress=True,
    )
    conditions = list(args.condition) * (len(sources) // len(args.condition))
    for i, (mesh_path, png_path, json_path) in enumerate(paths):
        mesh, s = result.meshes[i], {"family": args.family, "model": str(args.model), "condition": conditions[i]}
        s.update(result.stats[i], method=spec)
        if len(mesh.faces):
            write_mesh(mesh, mesh_path)
        save_image_atomic(render(mesh), png_path)
        write_json_atomic(json_path, s)
        _say(args.family, s, spec, mesh_path if len(mesh.faces) else None, png_path, json_path)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .methods import check_mesh_params, parse_mesh_method
    from .pipeline import DEFAULT_METHOD, MeshARPipeline
    from .render import render
    from .tokenizer import read_mesh, write_mesh

    if args.family is not None:
        return _generate_family(args)
    if args.class_id is None:
        raise ValueError("--class is required (a class of the default mesh GPT), or give --family llama-mesh")
    if args.prompt:
        raise ValueError("--prompt is for --family llama-mesh; the default mesh GPT takes --class")
    if args.condition:
        raise ValueError("--condition is for --family meshanything; the default mesh GPT takes --class")
    paths = output_files(args.out, count_argument(args.num_meshes, "--num-meshes"), MESH_SUFFIXES, "mesh")
    # A bad method or value fails before anything is loaded; --method may carry parameters (xspec:rule=typical).
    method, params = parse_mesh_method(args.method or DEFAULT_METHOD, "--method")
    params = check_mesh_params(method, {**params, **dict(args.param or [])})
    prefix = None
    if args.prefix is not None:
        try:
            prefix = read_mesh(args.prefix)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"--prefix: {err}") from None
    pipe = MeshARPipeline.from_pretrained(args.model)
    try:
        label = pipe.class_label(args.class_id)
    except ValueError as err:
        raise ValueError(f"--class: {err}") from None
    if args.max_faces is not None:
        try:
            pipe.check_faces(args.max_faces)
        except ValueError as err:
            raise ValueError(f"--max-faces: {err}") from None
    result = pipe(
        label,
        method=method,
        num_meshes=args.num_meshes,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_faces=args.max_faces,
        prefix=prefix,
        seed=args.seed,
        progress=True,
        structure_mask=args.structure_mask == "on",
        **params,
    )
    for i, (mesh_path, png_path, json_path) in enumerate(paths):
        mesh = result.meshes[i]
        steps = result.face_steps[i][mesh.metadata.get("source_faces", [])] if len(mesh.faces) else None
        picture = render(mesh, steps, max_step=result.stats[i]["steps_to_end"])
        if len(mesh.faces):
            write_mesh(mesh, mesh_path)
        save_image_atomic(picture, png_path)
        write_json_atomic(json_path, result.stats[i])
        s = result.stats[i]
        _say(s["class"], s, method, mesh_path if len(mesh.faces) else None, png_path, json_path)
    return 0


def _bench_family(args: argparse.Namespace) -> int:
    """``bench mesh --family meshanything --model DIR [--condition MESH ...]``: the core's family bench."""
    from mmaccel.bench.family import format_table, run_family_bench
    from mmaccel.methods import parse_method

    from .meshanything import DEFAULT_TOP_K, DEFAULT_TOP_P, MeshAnythingFamily, MeshAnythingPipeline
    from .meshanything import default_conditions
    from .tokenizer import read_mesh

    if args.family != "meshanything":
        raise ValueError(f"bench mesh --family takes meshanything, got {args.family!r}")
    if args.model is None:
        raise ValueError("--family meshanything needs --model (a local folder holding model.safetensors)")
    methods = method_specs(args.methods or FAMILY_BENCH_METHODS, lambda spec: parse_method(spec, "--methods"))
    count = count_argument(args.num_meshes, "--num-meshes")
    batch_sizes = batch_sizes_argument(args.batch_sizes or "")
    given = []
    for path in args.condition or []:
        try:
            given.append(read_mesh(path))
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"--condition: {err}") from None
    conditions = [given[i % len(given)] for i in range(count)] if given else default_conditions(count)
    pipe = MeshAnythingPipeline.from_pretrained(args.model)
    limit = pipe.max_new_tokens()
    budget = limit if args.max_new_tokens is None else args.max_new_tokens
    if not 0 < budget <= limit:
        raise ValueError(f"--max-new-tokens must be in 1..{limit} (the model's context after its prefix)")
    temperature = 1.0 if args.temperature is None else args.temperature
    records = run_family_bench(
        MeshAnythingFamily(pipe, budget), methods, conditions, batch_sizes, 1.0 if args.guidance_scale is None
        else args.guidance_scale, temperature, args.seed, unit="meshes",
        top_k=DEFAULT_TOP_K if args.top_k is None else args.top_k,
        top_p=DEFAULT_TOP_P if args.top_p is None else args.top_p,
    )  # fmt: skip
    for r in records:
        r["model"] = str(args.model)
    print(format_table(records))
    if args.json:
        write_json_atomic(args.json, records)
        print(f"wrote {args.json}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import format_table, format_validity, run_bench
    from .methods import parse_mesh_method

    if args.json:
        check_writable(Path(args.json))
    if args.family is not None:
        return _bench_family(args)
    for flag, value in (("--condition", args.condition), ("--max-new-tokens", args.max_new_tokens),
                        ("--top-k", args.top_k), ("--top-p", args.top_p)):
        if value is not None:
            raise ValueError(f"{flag} is for bench mesh --family meshanything")
    methods = method_specs(args.methods or BENCH_METHODS, parse_mesh_method)
    count_argument(args.num_meshes, "--num-meshes")
    batch_sizes = batch_sizes_argument(args.batch_sizes or "")
    records = run_bench(
        model=args.model,
        methods=methods,
        num_meshes=args.num_meshes,
        batch_sizes=batch_sizes,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        seed=args.seed,
        num_reference=args.num_reference,
        progress=True,
        structure_mask=args.structure_mask == "on",
    )
    print(format_table(records))
    print(format_validity(records))
    if args.json:
        write_json_atomic(args.json, records)
        print(f"wrote {args.json}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale (default 1.5)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 is greedy (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="mesh i uses seed + i (default: 0)")
    p.add_argument(
        "--structure-mask",
        choices=("on", "off"),
        default="on",
        help="mask the model to the layout's grammar and sort order, for AR and every method alike (default: on)",
    )


def register(commands, generate, bench) -> None:
    from .data import CLASS_NAMES

    g = generate.add_parser(
        "mesh",
        help="class-conditional AR mesh generation (9 tokens a face)",
        description="Generate meshes with plain AR sampling, a core method or xspec (multi-head drafting).",
        epilog="example:\n  mmaccel generate mesh --class cone --method xspec --out cone.obj\n\n"
        "xspec: XSpecMesh's draft heads verified by rule=NAME (default exact, lossless), e.g. xspec:rule=typical",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_method_help(g, INIT_NAMES)
    g.add_argument(
        "--class",
        dest="class_id",
        type=class_argument,
        default=None,
        help=f"class name ({', '.join(CLASS_NAMES)}) or index (the default mesh GPT)",
    )
    g.add_argument(
        "--family",
        default=None,
        help="a real mesh family from a local --model folder: llama-mesh (LLaMA-Mesh's OBJ text; default method "
        "sjd:init=line; OUT.txt holds its answer) or meshanything (MeshAnything V2, remeshing --condition; default "
        "method sjd)",
    )
    g.add_argument("--prompt", action="append", help="--family llama-mesh: the user message (repeatable)")
    g.add_argument(
        "--condition", action="append", help="--family meshanything: a mesh file to remesh (repeatable)"
    )
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="--family: tokens per answer (default: 4096 for llama-mesh, the model's context for meshanything)",
    )
    g.add_argument("--method", default=None, help="xspec (default), ar, sjd, gsd, ... (listed below)")
    g.add_argument("--param", type=param_argument, action="append", help="a method parameter, name=value (repeatable)")
    g.add_argument("--num-meshes", type=int, default=1)
    g.add_argument("--max-faces", type=int, default=None, help="face budget (default: the model's context)")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--prefix", default=None, help="a mesh file whose faces start the sequence (completion)")
    g.add_argument("--out", required=True, help="output mesh (.obj, .ply, .glb); OUT.png and OUT.json beside it")
    _common(g)
    g.set_defaults(func=_generate)

    b = bench.add_parser("mesh", help="mesh methods side by side: forwards, wall clock, Chamfer, validity, accuracy")
    with_method_help(b, INIT_NAMES)
    b.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated method specs (default: {BENCH_METHODS}; with --family: {FAMILY_BENCH_METHODS})",
    )
    b.add_argument("--num-meshes", type=int, default=18, help="meshes per method, classes in turn")
    b.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    b.add_argument("--num-reference", type=int, default=12, help="held-out reference meshes per class")
    b.add_argument("--json", help="write the records here")
    b.add_argument(
        "--family", default=None, help="meshanything: MeshAnything V2 from a local --model folder (family bench)"
    )
    b.add_argument("--condition", action="append", help="--family meshanything: a mesh file to remesh (repeatable)")
    b.add_argument("--max-new-tokens", type=int, default=None, help="--family: tokens per mesh (default: context)")
    b.add_argument("--top-k", type=int, default=None, help="--family: top-k (default: the official 50)")
    b.add_argument("--top-p", type=float, default=None, help="--family: top-p (default: the official 0.95)")
    _common(b)
    b.set_defaults(func=_bench)


__all__ = ["register"]
