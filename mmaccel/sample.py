"""Sample folders for evaluation scripts: one file per sample, ``samples.json``, and an ADM-layout ``.npz``.

The driver is modality-agnostic: a modality hands it a :class:`Sampler` (generate a batch, save one sample, read
one back as an array) and the run's identity; the driver owns naming, resuming, sharding over ranks, progress and
atomic writes. Indices are cut into fixed batches ``[b * B, (b + 1) * B)`` that are the same whatever the number of
processes, and ranks take whole batches, so every sample is generated in exactly the batch a single process would
put it in: the union of the shards is byte-identical to a one-process run (sample ``i`` also has its own seed, so
it is the same alone or in any batch by the engine's contract; whole batches keep that true even where float
reductions depend on the batch's shape).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .io import write_atomic, write_json_atomic
from .sample_distributed import Ranks

RECORD = "samples.json"
NPZ = "samples.npz"
#: The fields of samples.json that must match for ``--resume`` to continue a run in the same folder.
IDENTITY_FIELDS = ("modality", "run", "seeds", "conditions", "batch_size")


class Sampler(Protocol):
    """What a modality gives the sample driver."""

    #: The suffix of each sample's file (``.png``, ``.wav``, ...).
    suffix: str

    def generate(self, conditions: Sequence[Any], seeds: Sequence[int]) -> list[tuple[Any, dict[str, Any]]]:
        """One batch: ``(media, stats)`` per sample, sample ``i`` from ``conditions[i]`` and ``seeds[i]``."""
        ...

    def save(self, media: Any, path: Path) -> None:
        """Write one sample to ``path`` (the driver passes a temporary name and renames it)."""
        ...


@dataclass
class SampleRun:
    """What a run is: its modality, the settings that shape its samples (model, method, parameters, sampling),
    one seed and one condition per index, and the batch size that cuts indices into batches."""

    modality: str
    run: dict[str, Any]
    seeds: list[int]
    conditions: list[Any]
    batch_size: int
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.seeds) < 1:
            raise ValueError(f"--num-samples must be >= 1, got {len(self.seeds)}")
        if len(self.conditions) != len(self.seeds):
            raise ValueError(f"{len(self.conditions)} conditions for {len(self.seeds)} samples")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")

    @property
    def num_samples(self) -> int:
        return len(self.seeds)

    def identity(self) -> dict[str, Any]:
        # Through JSON, so that tuples and lists (and int keys) compare as they will after a reload.
        return json.loads(json.dumps({k: getattr(self, k) for k in IDENTITY_FIELDS}))

    def batches(self) -> list[range]:
        n, b = self.num_samples, self.batch_size
        return [range(start, min(start + b, n)) for start in range(0, n, b)]

    def missing_batches(self) -> list[range]:
        """The batches with a sample not yet finished (a partial batch is generated again, whole)."""
        return [b for b in self.batches() if any(str(i) not in self.samples for i in b)]


def shard(batches: list[range], rank: int, world: int) -> list[range]:
    """The batches rank ``rank`` of ``world`` generates: every ``world``-th, so each round gives every rank one."""
    return batches[rank::world]


def sample_name(index: int, seed: int, suffix: str) -> str:
    """``000042_seed42.png``: sorted by index, and the seed is visible to whoever reads the folder."""
    return f"{index:06d}_seed{seed}{suffix}"


def check_out(run: SampleRun, out: Path, resume: bool) -> dict[str, dict[str, Any]]:
    """The samples ``out`` already holds for ``run`` (empty for a new run); refuses a folder of another run.

    A folder with a ``samples.json`` of other settings, seeds, conditions or batch size is refused; one of this run
    is continued only with ``resume`` (a finished sample is skipped when its file is there). A non-empty folder
    without ``samples.json`` is refused too: its files could collide with ours.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    if not out.exists():
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out {str(out)!r}: its parent folder does not exist")
        return {}
    record = out / RECORD
    if not record.is_file():
        visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if visible:
            raise ValueError(
                f"--out {str(out)!r} holds files ({', '.join(sorted(visible)[:3])}, ...) but no {RECORD}; "
                "choose an empty or new folder"
            )
        return {}
    try:
        old = json.loads(record.read_text())
        old_identity = {k: old[k] for k in IDENTITY_FIELDS}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"--out {str(out)!r}: cannot read {record}: {err}") from None
    new_identity = run.identity()
    if old_identity != new_identity:
        differs = [k for k in IDENTITY_FIELDS if old_identity[k] != new_identity[k]]
        detail = ", ".join(_difference(k, old_identity[k], new_identity[k]) for k in differs)
        raise ValueError(
            f"--out {str(out)!r} holds another run's {RECORD} ({detail}); choose another --out, "
            "or rerun with the same settings and --resume"
        )
    done = {k: v for k, v in old.get("samples", {}).items() if (out / v["file"]).is_file()}
    if not resume:
        raise ValueError(
            f"--out {str(out)!r} already holds this run ({len(done)} of {run.num_samples} samples); "
            "pass --resume to continue it, or choose another --out"
        )
    return done


def _difference(key: str, old: Any, new: Any) -> str:
    if key == "run" and isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys)
    if isinstance(old, list) and isinstance(new, list) and len(old) != len(new):
        return f"{key}: {len(old)} there, {len(new)} now"
    return f"{key}: {old!r} there, {new!r} now" if not isinstance(old, list) else f"{key} differ"


def _write_record(out: Path, run: SampleRun, ranks: Ranks, complete: bool, npz: str | None) -> None:
    data = {
        **run.identity(),
        "num_samples": run.num_samples,
        "world_size": ranks.world,
        "complete": complete,
        "npz": npz,
        "samples": dict(sorted(run.samples.items(), key=lambda kv: int(kv[0]))),
    }
    write_json_atomic(out / RECORD, data)


def run_samples(
    sampler_factory: Any,
    run: SampleRun,
    out: str | Path,
    *,
    ranks: Ranks | None = None,
    suffix: str = ".png",
    load_array: Callable[[Path], np.ndarray] | None = None,
    pack: Callable[[list[np.ndarray]], dict[str, np.ndarray]] | None = None,
    npz: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``run``'s missing samples into ``out`` and return its ``samples.json`` content.

    ``sampler_factory()`` builds the :class:`Sampler` (it loads the model, so it is called only once the folder is
    known to be usable and only if some sample is missing). Under several ranks each takes whole batches in turn;
    after each round the ranks' stats are gathered and rank 0 rewrites ``samples.json``. With ``npz`` rank 0 writes
    ``samples.npz`` from the files, last, each read back by ``load_array`` (default: an image file as uint8
    ``[H, W, 3]``) and the list packed into the archive's members by ``pack`` (default: ``arr_0``, the arrays
    stacked: the ADM evaluator's layout; :func:`pack_padded` for samples of different lengths).
    """
    load_array = read_image_array if load_array is None else load_array
    pack = stack_arrays if pack is None else pack
    ranks = ranks if ranks is not None else Ranks()
    out = Path(out)
    # Every rank checks the folder itself (same files, same verdict), so a refusal needs no collective.
    run.samples = check_out(run, out, resume)
    ranks.barrier()
    if ranks.is_main:
        out.mkdir(exist_ok=True)
        _write_record(out, run, ranks, complete=False, npz=None)
    ranks.barrier()
    todo = run.missing_batches()
    mine = shard(todo, ranks.rank, ranks.world)
    rounds = -(-len(todo) // ranks.world)
    sampler = sampler_factory() if mine else None
    bar = None
    if progress and ranks.is_main and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(b) for b in todo), unit="sample", desc=f"sample {run.modality}", dynamic_ncols=True)
    for r in range(rounds):
        finished: dict[str, dict[str, Any]] = {}
        if r < len(mine):
            finished = _generate_batch(sampler, run, mine[r], out, suffix)
        for part in ranks.all_gather(finished):
            run.samples.update(part)
            if bar is not None:
                bar.update(len(part))
        if ranks.is_main:
            _write_record(out, run, ranks, complete=False, npz=None)
    if bar is not None:
        bar.close()
    ranks.barrier()
    npz_name = None
    if ranks.is_main:
        if npz:
            npz_name = NPZ
            files = [out / run.samples[str(i)]["file"] for i in range(run.num_samples)]
            members = pack([load_array(f) for f in files])
            write_atomic(out / NPZ, lambda tmp: _savez(tmp, members))
        _write_record(out, run, ranks, complete=True, npz=npz_name)
    ranks.barrier()
    return json.loads((out / RECORD).read_text())


def stack_arrays(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The ADM evaluator's layout: ``arr_0``, the samples stacked (they share one shape: images, fixed-size clips)."""
    return {"arr_0": np.stack(arrays)}


def pack_padded(arrays: list[np.ndarray], pad: float | int = 0) -> dict[str, np.ndarray]:
    """Samples whose first axis differs (waveforms, a mesh's faces): ``arr_0`` zero-padded (``pad``) along it to
    the longest, and ``lengths`` (int64 ``[N]``), each sample's own length."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    padded = np.full((len(arrays), int(lengths.max()), *arrays[0].shape[1:]), pad, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):  # one copy per sample, not per element
        padded[i, : len(a)] = a
    return {"arr_0": padded, "lengths": lengths}


def _savez(tmp: str, members: dict[str, np.ndarray]) -> None:
    """np.savez's layout (one stored ``NAME.npy`` member per array, ``arr_0`` first), with a fixed member date:
    np.savez stamps the current time, and then two runs of the same samples would differ in the archive's bytes."""
    import zipfile

    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in members.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.require(array, requirements="C"), allow_pickle=False)


def _generate_batch(sampler: Sampler, run: SampleRun, batch: range, out: Path, suffix: str) -> dict[str, dict]:
    seeds = [run.seeds[i] for i in batch]
    start = time.perf_counter()
    results = sampler.generate([run.conditions[i] for i in batch], seeds)
    wall = time.perf_counter() - start
    finished = {}
    for i, seed, (media, stats) in zip(batch, seeds, results):
        name = sample_name(i, seed, suffix)
        write_atomic(out / name, lambda tmp, media=media: sampler.save(media, Path(tmp)))
        finished[str(i)] = {
            "file": name,
            "seed": seed,
            "condition": run.conditions[i],
            **stats,
            "batch_wall_s": wall,
            "batch_size": len(batch),
        }
    return finished


def read_image_array(path: str | Path) -> np.ndarray:
    """An image file as uint8 ``[H, W, 3]``; an unreadable file raises ValueError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from None
