"""Mesh quality offline: Chamfer and Hausdorff distances on surface samples, and MeshXL's set metrics.

* Chamfer distance (mean of the two directed mean nearest-neighbour distances) and Hausdorff distance (the
  larger directed maximum) between point sets sampled on two surfaces, with ``scipy.spatial.cKDTree``; a
  generated mesh is scored against the nearest held-out real mesh of its class.
* Set metrics over Chamfer distances (Achlioptas et al. 2018, as MeshXL reports them): MMD (mean over the
  reference set of the distance to the nearest generated shape), COV (the fraction of reference shapes that are
  the nearest reference of some generated shape) and 1-NNA (leave-one-out 1-nearest-neighbour accuracy of telling
  generated from reference in the union; 50% is ideal).

Both sets are normalised into the unit cube as the tokenizer normalises, so distances are in that unit.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .tokenizer import DecodeReport, clean_mesh, dequantise, normalise

POINTS = 1024
#: Distinct vertices of the training shapes lie at least 13 bins apart (L-inf, 7-bit bins; the minimum over 3000
#: shapes of mmaccel.mesh.data): a generated vertex within this many bins of another is a near miss, never a
#: corner the data has.
NEAR_MISS_BINS = 12


def surface_points(mesh: trimesh.Trimesh, n: int = POINTS, seed: int = 0) -> np.ndarray | None:
    """``n`` points sampled uniformly on the normalised surface, or None when the mesh has no area."""
    if len(mesh.faces) == 0 or float(mesh.area) <= 0:
        return None
    normed = trimesh.Trimesh(normalise(np.asarray(mesh.vertices, dtype=float)), mesh.faces, process=False)
    points, _ = trimesh.sample.sample_surface(normed, n, seed=seed)
    return np.asarray(points)


def chamfer_hausdorff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Chamfer (mean of both directed means) and Hausdorff distances between point sets ``[N, 3]``, ``[M, 3]``."""
    ab = cKDTree(b).query(a)[0]
    ba = cKDTree(a).query(b)[0]
    return float((ab.mean() + ba.mean()) / 2), float(max(ab.max(), ba.max()))


def distance_matrix(x: list[np.ndarray], y: list[np.ndarray]) -> np.ndarray:
    """Chamfer distances ``[len(x), len(y)]``; each y tree is built once."""
    trees = [cKDTree(b) for b in y]
    x_trees = [cKDTree(a) for a in x]
    out = np.empty((len(x), len(y)))
    for i, a in enumerate(x):  # a few dozen shapes per set: pairs, not tokens
        for j, b in enumerate(y):
            out[i, j] = (trees[j].query(a)[0].mean() + x_trees[i].query(b)[0].mean()) / 2
    return out


def nearest_reference(points: np.ndarray, references: list[np.ndarray]) -> tuple[float, float]:
    """Chamfer and Hausdorff distance to the reference nearest in Chamfer distance."""
    scores = [chamfer_hausdorff(points, r) for r in references]
    best = int(np.argmin([s[0] for s in scores]))
    return scores[best]


def set_metrics(generated: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """MMD, COV and 1-NNA (Chamfer) of a generated set against a reference set."""
    if not generated or not reference:
        return {"mmd": float("nan"), "cov": float("nan"), "nna": float("nan")}
    gr = distance_matrix(generated, reference)
    mmd = float(gr.min(0).mean())
    cov = float(len(set(gr.argmin(1).tolist())) / len(reference))
    gg = distance_matrix(generated, generated)
    rr = distance_matrix(reference, reference)
    n_g = len(generated)
    full = np.block([[gg, gr], [gr.T, rr]])
    np.fill_diagonal(full, np.inf)
    label = np.r_[np.zeros(n_g), np.ones(len(reference))]
    nna = float((label[full.argmin(1)] == label).mean())
    return {"mmd": mmd, "cov": cov, "nna": nna}


def merge_close(
    mesh: trimesh.Trimesh, bins: int = NEAR_MISS_BINS, levels: int = 128
) -> tuple[trimesh.Trimesh, DecodeReport]:
    """``mesh`` (decoded, coordinates on the ``levels`` grid) with every group of vertices at most ``bins`` apart
    (L-inf, chained) merged into its first vertex, cleaned again; the upper bound of what snapping near misses
    could repair."""
    grid = np.rint((np.asarray(mesh.vertices) + 0.5) * (levels - 1)).astype(np.int64)
    n = len(grid)
    pairs = cKDTree(grid).query_pairs(bins, p=np.inf, output_type="ndarray") if n else np.zeros((0, 2), int)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    first = np.full(group.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, group, np.arange(n))
    report = DecodeReport(ended=True)
    merged = clean_mesh(dequantise(grid[first[group]][np.asarray(mesh.faces)], levels), report)
    return merged, report


def validity_breakdown(meshes: list[trimesh.Trimesh], reports: list, levels: int = 128) -> dict[str, float]:
    """Which check fails, as fractions of the meshes (``boundary_edges`` and ``overfull_edges``: means per mesh).

    ``reports`` are the :class:`~mmaccel.mesh.tokenizer.DecodeReport` of each mesh. A closed manifold triangle
    mesh has every edge in exactly two faces and every vertex in at least three, so ``stray_vertex`` (a vertex in
    fewer than three faces: a coordinate written once, matching no other corner) and ``boundary_edges`` point at
    coordinates the model got wrong, ``out_of_order`` / ``degenerate`` / ``duplicates`` / ``bad_tokens`` at syntax.
    ``stray_near_miss`` is the share of stray vertices (over all meshes' stray vertices) within
    :data:`NEAR_MISS_BINS` of another vertex, and ``valid_if_merged`` the validity after :func:`merge_close`: how
    much of the invalidity a rule that snapped near misses could remove at most.
    """
    edges_one, edges_many, stray, near, strays, merged_valid = [], [], [], 0, 0, []
    for mesh in meshes:
        if len(mesh.faces) == 0:
            edges_one.append(0)
            edges_many.append(0)
            stray.append(True)
            merged_valid.append(False)
            continue
        _, count = np.unique(np.sort(mesh.edges, 1), axis=0, return_counts=True)
        edges_one.append(int((count == 1).sum()))
        edges_many.append(int((count > 2).sum()))
        lonely = np.flatnonzero(np.bincount(mesh.faces.reshape(-1), minlength=len(mesh.vertices)) < 3)
        stray.append(bool(len(lonely)))
        if len(lonely) and len(mesh.vertices) > 1:
            grid = np.rint((np.asarray(mesh.vertices) + 0.5) * (levels - 1))
            gap = cKDTree(grid).query(grid[lonely], k=2, p=np.inf)[0][:, 1]
            near += int((gap <= NEAR_MISS_BINS).sum())
        strays += len(lonely)
        merged_valid.append(merge_close(mesh, levels=levels)[1].valid)
    frac = lambda flags: float(np.mean(flags)) if len(flags) else float("nan")  # noqa: E731
    return {
        "valid": frac([r.valid for r in reports]),
        "watertight": frac([r.watertight for r in reports]),
        "winding_consistent": frac([bool(len(m.faces)) and bool(m.is_winding_consistent) for m in meshes]),
        "ended": frac([r.ended for r in reports]),
        "out_of_order": frac([r.out_of_order > 0 for r in reports]),
        "degenerate": frac([r.degenerate > 0 for r in reports]),
        "duplicates": frac([r.duplicates > 0 for r in reports]),
        "bad_tokens": frac([r.bad_tokens > 0 for r in reports]),
        "stray_vertex": frac(stray),
        "stray_near_miss": near / strays if strays else 0.0,
        "valid_if_merged": frac(merged_valid),
        "boundary_edges": frac(edges_one),
        "overfull_edges": frac(edges_many),
    }
