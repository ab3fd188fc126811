"""A tiny offscreen mesh rasteriser (PIL, painter's algorithm): faces coloured by the forward that accepted them.

The view is a fixed three-quarter one from above; each face is filled with its colour from the acceptance scale
(forward 0 dark blue to the last forward yellow, as the image modality's acceptance maps), shaded by how much it
faces a light at the camera, and drawn back to front. A colour bar with the forward count sits at the bottom.
"""

from __future__ import annotations

import numpy as np
import trimesh
from PIL import Image, ImageDraw

# viridis' end points and middle, enough for a readable scale without matplotlib
_SCALE = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)


def scale_colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to RGB floats along the scale."""
    x = np.clip(values, 0, 1) * (len(_SCALE) - 1)
    i = np.minimum(x.astype(int), len(_SCALE) - 2)
    t = (x - i)[..., None]
    return _SCALE[i] * (1 - t) + _SCALE[i + 1] * t


def _view(vertices: np.ndarray) -> np.ndarray:
    yaw, pitch = np.radians(35), np.radians(-60)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    return vertices @ rz.T @ rx.T


def render(
    mesh: trimesh.Trimesh, face_steps: np.ndarray | None = None, max_step: int | None = None, size: int = 256
) -> Image.Image:
    """An RGB image of ``mesh``; ``face_steps[f]`` is the forward that accepted face ``f`` (None: one colour)."""
    image = Image.new("RGB", (size, size + 24), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    faces = np.asarray(mesh.faces)
    top = max_step if max_step is not None else int(face_steps.max()) if face_steps is not None and len(faces) else 1
    if len(faces):
        v = _view(np.asarray(mesh.vertices, dtype=float))
        v = v - (v.min(0) + v.max(0)) / 2
        extent = max(float(np.abs(v[:, :2]).max()), 1e-6)
        xy = v[:, :2] / extent * (0.42 * size) + size / 2
        xy[:, 1] = size - xy[:, 1]
        tri = v[faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(min=1e-12)
        light = 0.35 + 0.65 * np.abs(normal[:, 2])
        steps = face_steps if face_steps is not None else np.zeros(len(faces))
        colour = scale_colour(steps / max(top, 1)) * light[:, None]
        for f in np.argsort(tri[:, :, 2].mean(1)):  # back to front
            draw.polygon([tuple(p) for p in xy[faces[f]]], fill=tuple(int(c) for c in colour[f]), outline=(30, 30, 30))
    bar = scale_colour(np.linspace(0, 1, size - 80))
    for x, c in enumerate(bar):
        draw.line([(40 + x, size + 6), (40 + x, size + 18)], fill=tuple(int(v) for v in c))
    draw.text((4, size + 6), "0", fill=(0, 0, 0))
    draw.text((size - 36, size + 6), str(top), fill=(0, 0, 0))
    return image
