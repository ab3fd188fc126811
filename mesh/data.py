"""Procedural mesh classes for the default mesh model: closed low-poly primitives with random proportions.

Every shape is watertight and consistently wound (outward normals), has at most :data:`MAX_FACES` faces
after 7-bit quantisation, stands on the z = 0 plane with z up, and is turned by a random yaw about z (MeshGPT's
augmentation keeps the up axis too). Sizes and proportions are drawn per shape, so a class is a family of shapes,
not one shape.
"""

from __future__ import annotations

import numpy as np
import trimesh

from .tokenizer import encode

CLASS_NAMES = ("box", "prism", "cylinder", "cone", "pyramid", "sphere", "torus", "lshape", "stairs")
NUM_CLASSES = len(CLASS_NAMES)
#: The most faces a generated shape has (a 9-gon cylinder's 32, an L-shape's 20, a 3 x 6 torus' 36).
MAX_FACES = 36


def class_index(name: str) -> int:
    """The label of class ``name``; an unknown name is a ValueError listing the classes."""
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; choose one of {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(name)


def _ear_clip(polygon: np.ndarray) -> np.ndarray:
    """Counter-clockwise simple polygon [N, 2] to triangles [N - 2, 3] (ear clipping; N is a handful)."""
    index = list(range(len(polygon)))
    triangles = []

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    while len(index) > 3:
        for k in range(len(index)):
            i, j, m = index[k - 1], index[k], index[(k + 1) % len(index)]
            a, b, c = polygon[i], polygon[j], polygon[m]
            if cross(a, b, c) <= 1e-12:
                continue
            others = [polygon[o] for o in index if o not in (i, j, m)]
            if any(cross(a, b, p) >= 0 and cross(b, c, p) >= 0 and cross(c, a, p) >= 0 for p in others):
                continue
            triangles.append((i, j, m))
            index.pop(k)
            break
        else:
            raise ValueError("polygon is not simple")
    triangles.append(tuple(index))
    return np.array(triangles)


def extrude(polygon: np.ndarray, height: float) -> trimesh.Trimesh:
    """A prism over a counter-clockwise polygon [N, 2]: caps by ear clipping, two triangles a side."""
    n = len(polygon)
    cap = _ear_clip(polygon)
    bottom = np.column_stack([polygon, np.zeros(n)])
    top = np.column_stack([polygon, np.full(n, height)])
    i = np.arange(n)
    j = (i + 1) % n
    sides = np.concatenate([np.column_stack([i, j, j + n]), np.column_stack([i, j + n, i + n])])
    faces = np.concatenate([cap[:, ::-1], cap + n, sides])
    return trimesh.Trimesh(np.concatenate([bottom, top]), faces, process=False)


def regular_polygon(n: int, rx: float, ry: float, phase: float = 0.0) -> np.ndarray:
    angle = phase + 2 * np.pi * np.arange(n) / n
    return np.column_stack([rx * np.cos(angle), ry * np.sin(angle)])


def apex_solid(base: np.ndarray, height: float) -> trimesh.Trimesh:
    """A cone or pyramid: a convex counter-clockwise base polygon [N, 2] joined to an apex above its centre."""
    n = len(base)
    vertices = np.concatenate([np.column_stack([base, np.zeros(n)]), [[0.0, 0.0, height]]])
    i = np.arange(n)
    fan = np.column_stack([np.zeros(n - 2, int), i[2:], i[1:-1]])  # base, facing down
    sides = np.column_stack([i, (i + 1) % n, np.full(n, n)])
    return trimesh.Trimesh(vertices, np.concatenate([fan, sides]), process=False)


def torus(major: int, minor: int, r_major: float, r_minor: float) -> trimesh.Trimesh:
    u = 2 * np.pi * np.arange(major) / major
    v = 2 * np.pi * np.arange(minor) / minor
    uu, vv = np.meshgrid(u, v, indexing="ij")
    ring = r_major + r_minor * np.cos(vv)
    vertices = np.stack([ring * np.cos(uu), ring * np.sin(uu), r_minor * np.sin(vv)], -1).reshape(-1, 3)
    a = np.arange(major)[:, None] * minor + np.arange(minor)[None]
    b = ((np.arange(major)[:, None] + 1) % major) * minor + np.arange(minor)[None]
    c = ((np.arange(major)[:, None] + 1) % major) * minor + (np.arange(minor)[None] + 1) % minor
    d = np.arange(major)[:, None] * minor + (np.arange(minor)[None] + 1) % minor
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return trimesh.Trimesh(vertices, faces, process=False)


def make_shape(name: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One random shape of class ``name`` (before normalisation; z up, base on z = 0 for most classes)."""
    u = rng.uniform
    if name == "box":
        mesh = extrude(regular_polygon(4, 1, 1, np.pi / 4) * [u(0.4, 1), u(0.4, 1)], u(0.3, 1.2))
    elif name == "prism":
        n = int(rng.choice([3, 5, 6]))
        mesh = extrude(regular_polygon(n, 1, u(0.6, 1)), u(0.3, 1.5))
    elif name == "cylinder":
        n = int(rng.integers(8, 10))
        mesh = extrude(regular_polygon(n, 1, u(0.7, 1)), u(0.4, 2.0))
    elif name == "cone":
        n = int(rng.integers(8, 13))
        mesh = apex_solid(regular_polygon(n, 1, u(0.7, 1)), u(0.6, 2.0))
    elif name == "pyramid":
        n = int(rng.choice([3, 4]))
        mesh = apex_solid(regular_polygon(n, 1, u(0.6, 1), np.pi / 4 if n == 4 else 0.0), u(0.5, 1.5))
    elif name == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=0)
        mesh.vertices = mesh.vertices * [u(0.6, 1), u(0.6, 1), u(0.6, 1)]
    elif name == "torus":
        mesh = torus(int(rng.integers(5, 7)), 3, 1.0, u(0.25, 0.45))
    elif name == "lshape":
        w, d, t = u(0.6, 1.0), u(0.6, 1.0), u(0.2, 0.45)
        polygon = np.array([[0, 0], [w, 0], [w, t], [t, t], [t, d], [0, d]], dtype=float)
        mesh = extrude(polygon, u(0.2, 1.0))
    elif name == "stairs":
        steps = int(rng.integers(2, 4))
        run, rise = u(0.2, 0.4), u(0.15, 0.35)
        points = [[0.0, 0.0], [steps * run, 0.0]]
        for s in range(steps, 0, -1):
            points += [[s * run, s * rise], [(s - 1) * run, s * rise]]
        # An x-z profile extruded along y: swapping y and z mirrors the solid, so the winding is reversed.
        profile = extrude(np.array(points), u(0.4, 1))
        v = profile.vertices
        mesh = trimesh.Trimesh(np.column_stack([v[:, 0], v[:, 2], v[:, 1]]), profile.faces[:, ::-1], process=False)
    else:
        raise ValueError(f"unknown class {name!r}; choose one of {', '.join(CLASS_NAMES)}")
    yaw = u(0, 2 * np.pi)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(yaw, [0, 0, 1]))
    return mesh


def make_dataset(n: int, seed: int, levels: int = 128) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` shapes, classes in turn: face-token arrays (sorted layout, no bos/eos) and labels [n]."""
    rng = np.random.default_rng(seed)
    tokens, labels = [], np.arange(n) % NUM_CLASSES
    for label in labels:
        tokens.append(encode(make_shape(CLASS_NAMES[label], rng), levels))
    return tokens, labels


def make_meshes(n_per_class: int, seed: int) -> dict[str, list[trimesh.Trimesh]]:
    """``n_per_class`` normalised shapes of every class (a held-out reference set for the quality metrics)."""
    from .tokenizer import normalise

    rng = np.random.default_rng(seed)
    out: dict[str, list[trimesh.Trimesh]] = {name: [] for name in CLASS_NAMES}
    for _ in range(n_per_class):
        for name in CLASS_NAMES:
            mesh = make_shape(name, rng)
            out[name].append(trimesh.Trimesh(normalise(np.asarray(mesh.vertices)), mesh.faces, process=False))
    return out
