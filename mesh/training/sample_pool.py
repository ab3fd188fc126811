"""Sample a pool of the mesh GPT's own sequences, for distilling draft heads on the distribution they draft from.

The heads are judged on the GPT's guided, masked samples (the pipeline's defaults), not on the training shapes;
drafting from shapes the GPT would not have written is a distribution shift (Medusa-2 trains its heads on the
model's own generations for the same reason: "self-distillation", Cai et al. 2024, section 2.3.2). Sequences
are ``[class, bos, faces..., eos, eos...]`` rows, the layout ``distill_heads`` trains on.

    python -m mmaccel.mesh.training.sample_pool --num 4096 --out runs/mesh_pool.safetensors --threads 1

Classes cycle through the model's classes; mesh ``i`` uses seed ``--seed + i``. The bench's speculative rows
use seeds below ``10**6``; its AR noise floor (``ar@seed2``, seeds from ``10**6``) repeats the first pool rows,
which is harmless: those rows are AR samples, and no head drafts there.

The file is rewritten atomically after every chunk, so a stopped run leaves the chunks it finished, and running the
same command again (or with a larger ``--num``) resumes from them: row ``i`` is the same sequence either way. An
existing ``--out`` sampled with other settings is refused, not overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmaccel.io import check_writable, write_atomic
from mmaccel.mesh.pipeline import DEFAULTS, MeshARPipeline

POOL_SEED = 1_000_000


def pool_rows(pipe: MeshARPipeline, labels: list[int], seed: int) -> torch.Tensor:
    """``[N, 2 + L]`` sequences ``[class, bos, generated...]`` of plain AR at the pipeline's default settings."""
    out = pipe(labels, method="ar", seed=seed, progress=False)
    prompt = pipe.model.class_prompt(torch.tensor(labels)).ids.cpu()
    return torch.cat([prompt, out.tokens], 1)


def save_pool(path: Path, tokens: torch.Tensor, settings: dict) -> None:
    meta = {"settings": json.dumps(settings)}
    write_atomic(path, lambda tmp: save_file({"tokens": tokens.to(torch.int16).contiguous()}, tmp, metadata=meta))


def load_pool(path: str | Path) -> tuple[torch.Tensor, dict]:
    """The pool's ``[N, T]`` token rows (int64) and the settings it was sampled with."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample pool not found: {str(path)!r}")
    try:
        with safe_open(str(path), "pt") as f:
            tokens, meta = f.get_tensor("tokens").long(), f.metadata() or {}
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{str(path)!r} is not a sample pool written by sample_pool: {e}") from None
    return tokens, json.loads(meta.get("settings", "{}"))


def resumed_rows(out: Path, settings: dict) -> list[torch.Tensor]:
    """The rows an earlier run of the same settings left in ``out`` (none if it does not exist)."""
    if not out.exists():
        return []
    try:
        tokens, earlier = load_pool(out)
    except ValueError as e:
        sys.exit(f"sample_pool: --out {e}; choose another name")
    if earlier != settings:
        sys.exit(f"sample_pool: --out {str(out)!r} was sampled with {earlier}, not {settings}; choose another name")
    return [tokens]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mesh/weights")
    parser.add_argument("--num", type=int, default=4096, help="sequences to sample")
    parser.add_argument("--chunk", type=int, default=64, help="sequences a generate call")
    parser.add_argument("--seed", type=int, default=POOL_SEED)
    parser.add_argument("--out", required=True, help="the pool file (.safetensors)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.num < 1 or args.chunk < 1:
        sys.exit("sample_pool: --num and --chunk must be >= 1")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        sys.exit(f"sample_pool: --out must end in .safetensors, got {args.out!r}")
    check_writable(out)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = MeshARPipeline.from_pretrained(args.model)
    classes = pipe.model.vocab.num_classes
    settings = {k: DEFAULTS[k] for k in ("guidance_scale", "temperature", "structure_mask")}
    settings.update(model=str(args.model), seed=args.seed)
    rows = resumed_rows(out, settings)
    if rows:
        print(f"resuming {out}: {rows[0].shape[0]} sequences already sampled", flush=True)
    for first in range(sum(r.shape[0] for r in rows), args.num, args.chunk):
        labels = [(first + i) % classes for i in range(min(args.chunk, args.num - first))]
        rows.append(pool_rows(pipe, labels, args.seed + first))
        save_pool(out, torch.cat(rows), settings)
        done = first + len(labels)
        print(f"{done}/{args.num} sequences  {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    total = max(args.num, sum(r.shape[0] for r in rows))
    print(f"saved {out}: {total} sequences; total {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
