"""Procedural scenes of coloured shapes: the image domain's data, made here instead of downloaded.

Everything is deterministic from a ``numpy.random.Generator``. Two uses share this module:

* class-conditional images (``sample_class_image``, ``make_dataset``): one large shape whose kind is the
  class, with random colour, size, position, rotation, texture and background. The image default model
  (VQ tokenizer + class-conditional GPT, after LlamaGen, Sun et al. 2024) trains on these;
* multi-shape scenes (``random_scene``) with known attributes, from which questions such as "what colour
  is the square" or "is the star left of the circle" can be answered exactly (a CLEVR-like setting,
  Johnson et al. 2017, in 2-D).

Shapes are rasterised as implicit inside-tests on a pixel grid in numpy and anti-aliased by
supersampling, so no drawing library is needed and thousands of 64x64 images render per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
    "crescent",
    "heart",
)
"""Every shape kind, in class order: class ``i`` of the class-conditional images is ``KINDS[i]``."""

CLASS_NAMES: tuple[str, ...] = KINDS
NUM_CLASSES: int = len(CLASS_NAMES)
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
BACKGROUND_TEXTURES: tuple[str, ...] = ("flat", "gradient", "noise")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (130, 50, 180),
    "cyan": (40, 200, 220),
    "magenta": (220, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "brown": (130, 80, 40),
}
"""Named shape colours. Names are what a question-answering task reports; RGB is what is drawn."""

# Kinds that turn into another kind (or lose their identity) when rotated far: a square rotated by 45
# degrees is a diamond, a plus rotated by 45 degrees reads as an x. Their rotation stays within this
# many degrees of upright; other kinds rotate freely.
_MAX_TILT_DEG = {"square": 20.0, "diamond": 20.0, "cross": 20.0, "heart": 30.0}


@dataclass
class Shape:
    """One shape in a scene.

    ``center`` is (x, y) in [0, 1] with y pointing down (image rows); ``size`` is the shape's extent
    (diameter of its circumscribed circle) as a fraction of the image side; ``rotation`` is in degrees,
    counter-clockwise as seen on screen.
    """

    kind: str
    colour: str
    rgb: tuple[int, int, int]
    center: tuple[float, float]
    size: float
    rotation: float = 0.0
    texture: str = "solid"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Shape kind must be one of {KINDS}, got {self.kind!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"Shape texture must be one of {TEXTURES}, got {self.texture!r}")
        if not self.size > 0:
            raise ValueError(f"Shape size must be > 0, got {self.size}")

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned (x0, y0, x1, y1) of the circumscribed circle, in [0, 1] image units."""
        r = self.size / 2
        return (self.center[0] - r, self.center[1] - r, self.center[0] + r, self.center[1] + r)


@dataclass
class Scene:
    """A background plus shapes drawn in list order (later shapes cover earlier ones).

    ``background_texture`` is ``"flat"`` (``background`` everywhere), ``"gradient"`` (linear from
    ``background`` to ``background2`` along ``gradient_angle`` degrees) or ``"noise"`` (``background``
    plus per-pixel Gaussian noise of std ``noise_std`` in 0..255 units, seeded by ``noise_seed``).
    """

    background: tuple[int, int, int]
    shapes: list[Shape] = field(default_factory=list)
    background_texture: str = "flat"
    background2: tuple[int, int, int] | None = None
    gradient_angle: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.background_texture not in BACKGROUND_TEXTURES:
            raise ValueError(
                f"Scene background_texture must be one of {BACKGROUND_TEXTURES}, got {self.background_texture!r}"
            )


# ----------------------------------------------------------------------------------------------- rendering

_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n not in _GRID_CACHE:
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        _GRID_CACHE[n] = (c[None, :].repeat(n, 0), c[:, None].repeat(n, 1))
    return _GRID_CACHE[n]


def _regular_polygon(u: np.ndarray, v: np.ndarray, n: int, phase: float) -> np.ndarray:
    # Intersection of n half-planes; circumradius 1, first vertex at angle `phase`.
    inradius = np.cos(np.pi / n)
    inside = np.ones(u.shape, dtype=bool)
    for k in range(n):
        a = phase + (2 * k + 1) * np.pi / n  # edge normal sits halfway between two vertices
        inside &= u * np.cos(a) + v * np.sin(a) <= inradius
    return inside


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.42) -> np.ndarray:
    # Fold the angle into one half-sector [0, pi/points] that runs from an outer tip (radius 1) to an
    # inner corner (radius `inner`); inside means on the origin's side of the edge between them.
    rho = np.hypot(u, v)
    sector = np.pi / points
    phi = np.mod(np.arctan2(v, u) - np.pi / 2, 2 * sector)
    phi = np.where(phi > sector, 2 * sector - phi, phi)
    x, y = rho * np.cos(phi), rho * np.sin(phi)
    px, py = inner * np.cos(sector), inner * np.sin(sector)
    # Edge from (1, 0) to (px, py); the origin gives a positive cross product.
    return (px - 1) * y - py * (x - 1) >= 0


def _inside(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in shape coordinates, v pointing up. Every kind fits in the unit circle, so a
    shape's ``size`` really is the diameter of the circle that holds it."""
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if kind == "diamond":
        return np.abs(u) + np.abs(v) * 0.8 <= 0.8
    if kind == "triangle":
        return _regular_polygon(u, v, 3, np.pi / 2)
    if kind == "hexagon":
        return _regular_polygon(u, v, 6, 0.0)
    if kind == "star":
        return _star(u, v)
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.28) & (av <= 0.95)) | ((av <= 0.28) & (au <= 0.95))
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if kind == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + (v - 0.2) ** 2 >= 0.8**2)
    if kind == "heart":
        # Taubin's heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 reaches 1.25 from (0, 0.25): scale and
        # shift it into the unit circle.
        x, y = u * 1.25, v * 1.25 + 0.25
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0
    raise ValueError(f"unknown shape kind {kind!r}")


def _shape_layer(shape: Shape, n: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """(window, mask [h, w] bool, colour [h, w, 3] float) of one shape drawn on an n x n grid.

    Only the window of pixels that can touch the shape's circumscribed circle is evaluated.
    """
    half = shape.size / 2
    (x0, y0, x1, y1) = shape.bbox
    window = (
        slice(max(int(np.floor(y0 * n)) - 1, 0), min(int(np.ceil(y1 * n)) + 1, n)),
        slice(max(int(np.floor(x0 * n)) - 1, 0), min(int(np.ceil(x1 * n)) + 1, n)),
    )
    gx, gy = _grid(n)
    dx = (gx[window] - shape.center[0]) / half
    dy = (shape.center[1] - gy[window]) / half  # flip so v points up and rotation is counter-clockwise
    t = np.deg2rad(shape.rotation)
    c, s = np.cos(t), np.sin(t)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    mask = _inside(shape.kind, u, v)
    base = np.asarray(shape.rgb, dtype=np.float32)
    if shape.texture == "solid":
        return window, mask, np.broadcast_to(base, mask.shape + (3,))
    # The texture's second colour keeps the hue so the named colour stays the answer: darker for light
    # colours, lighter for dark ones.
    lum = 0.299 * base[0] + 0.587 * base[1] + 0.114 * base[2]
    alt = base * 0.55 if lum > 110 else base + (255 - base) * 0.5
    if shape.texture == "striped":
        pattern = np.sin(u * 9.0) > 0
    else:  # dotted
        pattern = (np.mod(u * 2.5, 1.0) - 0.5) ** 2 + (np.mod(v * 2.5, 1.0) - 0.5) ** 2 < 0.2**2
    return window, mask, np.where(pattern[..., None], alt, base)


def _background(scene: Scene, n: int) -> np.ndarray:
    bg = np.asarray(scene.background, dtype=np.float32)
    if scene.background_texture == "gradient":
        gx, gy = _grid(n)
        t = np.deg2rad(scene.gradient_angle)
        w = (gx - 0.5) * np.cos(t) - (gy - 0.5) * np.sin(t)
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-6)
        bg2 = np.asarray(scene.background2 if scene.background2 is not None else scene.background, np.float32)
        return bg + (bg2 - bg) * w[..., None]
    img = np.empty((n, n, 3), dtype=np.float32)
    img[:] = bg
    return img  # noise is added by render() at the output resolution


def _box_down(img: np.ndarray, k: int) -> np.ndarray:
    # Sum of k*k strided views: several times faster than reshape().mean() over non-contiguous axes.
    out = img[0::k, 0::k].copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                out += img[i::k, j::k]
    return out / (k * k)


def render(scene: Scene, size: int = 64, supersample: int = 2) -> np.ndarray:
    """Draw ``scene`` as a uint8 array [size, size, 3]; edges anti-aliased by ``supersample``^2 samples."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    n = size * supersample
    noisy = scene.background_texture == "noise" and scene.noise_std > 0
    # Background noise is added at the output resolution: supersampling would average it away.
    img = _background(scene, n)
    cover = np.zeros((n, n), dtype=bool) if noisy else None
    for shape in scene.shapes:
        window, mask, colour = _shape_layer(shape, n)
        img[window] = np.where(mask[..., None], colour, img[window])
        if cover is not None:
            cover[window] |= mask
    if supersample > 1:
        img = _box_down(img, supersample)
    if cover is not None:
        alpha = _box_down(cover.astype(np.float32), supersample)
        noise = np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise_std, (size, size, 1))
        img = img + noise.astype(np.float32) * (1.0 - alpha[..., None])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def owner_map(scene: Scene, size: int = 64) -> np.ndarray:
    """Which shape ``render(scene, size)`` draws at each pixel: int64 [size, size], the index into ``scene.shapes``,
    -1 for background. Later shapes cover earlier ones, as in :func:`render`; pixels are tested at their centres."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    owner = np.full((size, size), -1, dtype=np.int64)
    for index, shape in enumerate(scene.shapes):
        window, mask, _ = _shape_layer(shape, size)
        owner[window][mask] = index  # owner[window] is a view: basic slicing
    return owner


# ----------------------------------------------------------------------------------------------- sampling


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _random_background(
    rng: np.random.Generator, avoid: list[tuple[int, int, int]], textures: tuple[str, ...] = BACKGROUND_TEXTURES
) -> dict:
    """Background fields for a Scene, far enough in colour from every RGB in ``avoid``."""
    avoid_arr = np.asarray(avoid, dtype=np.float32).reshape(-1, 3)
    for _ in range(50):
        bg = rng.uniform(0, 255, 3)
        # Pull towards gray so backgrounds are muted and the shape's hue dominates.
        bg = bg * 0.6 + _luma(bg) * 0.4
        dist = np.abs(avoid_arr - bg).sum(axis=1).min() if len(avoid_arr) else 1e9
        lum_gap = min((abs(_luma(a) - _luma(bg)) for a in avoid_arr), default=1e9)
        if dist > 150 and lum_gap > 35:
            break
    texture = textures[int(rng.integers(len(textures)))]
    fields: dict = {"background": tuple(int(x) for x in bg), "background_texture": texture}
    if texture == "gradient":
        shift = rng.uniform(-40, 40, 3)
        fields["background2"] = tuple(int(x) for x in np.clip(bg + shift, 0, 255))
        fields["gradient_angle"] = float(rng.uniform(0, 360))
    elif texture == "noise":
        fields["noise_std"] = float(rng.uniform(4, 12))
        fields["noise_seed"] = int(rng.integers(2**31))
    return fields


def random_shape(
    rng: np.random.Generator,
    kind: str | None = None,
    size_range: tuple[float, float] = (0.3, 0.7),
    colour: str | None = None,
    center: tuple[float, float] | None = None,
    texture: str | None = None,
    colour_jitter: int = 0,
) -> Shape:
    """A random shape; any attribute given is kept. The centre keeps the whole shape inside the image."""
    kind = kind if kind is not None else KINDS[int(rng.integers(len(KINDS)))]
    colour = colour if colour is not None else list(COLOURS)[int(rng.integers(len(COLOURS)))]
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {list(COLOURS)}, got {colour!r}")
    size = float(rng.uniform(*size_range))
    if center is None:
        lo, hi = size / 2, 1 - size / 2
        center = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    tilt = _MAX_TILT_DEG.get(kind)
    rotation = float(rng.uniform(-tilt, tilt)) if tilt is not None else float(rng.uniform(0, 360))
    texture = texture if texture is not None else TEXTURES[int(rng.integers(len(TEXTURES)))]
    rgb = np.asarray(COLOURS[colour], dtype=np.int64)
    if colour_jitter:
        rgb = np.clip(rgb + rng.integers(-colour_jitter, colour_jitter + 1, 3), 0, 255)
    return Shape(kind, colour, tuple(int(x) for x in rgb), center, size, rotation, texture)


def random_scene(
    rng: np.random.Generator,
    n_shapes: int | tuple[int, int] = (1, 4),
    kinds: tuple[str, ...] | None = None,
    size_range: tuple[float, float] = (0.18, 0.34),
    allow_overlap: bool = False,
    distinct_kinds: bool = False,
) -> Scene:
    """A random scene of ``n_shapes`` shapes (an int, or an inclusive (min, max) range).

    Without ``allow_overlap`` shapes are placed so their circumscribed circles do not touch, which
    keeps every shape fully visible (counts and colours are then unambiguous). ``distinct_kinds`` draws
    each kind at most once, so "the square" names one shape. Raises ValueError if the shapes cannot be
    placed.
    """
    kinds = tuple(kinds) if kinds is not None else KINDS
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds must be drawn from {KINDS}, got {k!r}")
    if isinstance(n_shapes, int):
        count = n_shapes
    else:
        count = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    if count < 0:
        raise ValueError(f"n_shapes must be >= 0, got {n_shapes}")
    if distinct_kinds and count > len(kinds):
        raise ValueError(f"n_shapes={count} exceeds the {len(kinds)} kinds available with distinct_kinds")
    order = rng.permutation(len(kinds))
    shapes: list[Shape] = []
    for i in range(count):
        kind = kinds[int(order[i])] if distinct_kinds else kinds[int(rng.integers(len(kinds)))]
        for _ in range(200):
            cand = random_shape(rng, kind=kind, size_range=size_range)
            if allow_overlap or all(
                np.hypot(cand.center[0] - s.center[0], cand.center[1] - s.center[1]) > (cand.size + s.size) / 2 + 0.02
                for s in shapes
            ):
                shapes.append(cand)
                break
        else:
            raise ValueError(
                f"could not place {count} shapes of size_range={size_range} without overlap; "
                "lower n_shapes or size_range, or pass allow_overlap=True"
            )
    background = _random_background(rng, [s.rgb for s in shapes])
    return Scene(shapes=shapes, **background)


CLASS_STYLES: tuple[str, ...] = ("broad", "generation")
"""Two distributions of class images.

``"broad"``: shapes of 0.3-0.7 of the image side, free rotation (within ``_MAX_TILT_DEG`` for kinds that
turn into other kinds), three textures, flat / gradient / noise backgrounds. The VQ tokenizer and the
held-out classifier train on it, so both cover more than the generator is asked to produce.

``"generation"``: the image default model's target, a narrower distribution that a 3M-parameter GPT can
learn in about two hours on two CPU cores: large shapes (0.55-0.8 of the side) near the centre (offsets up to
0.06 of the side), rotation within +-15 degrees, solid shapes (the tokenizer's 4x4-pixel codes blur stripes
and dots into noise the GPT would have to model) on a flat or gradient background. Colour, size, position,
rotation and background colour and texture all still vary, within those ranges. Raster-order generation of
a shape anywhere in the frame was what a model this small could not learn: it has to commit to where the
shape starts before any of it is drawn. The bench's real images for FID come from this style too.
"""

_GENERATION_TILT_DEG = 15.0
_GENERATION_OFFSET = 0.06


def _check_style(style: str) -> None:
    if style not in CLASS_STYLES:
        raise ValueError(f"style must be one of {CLASS_STYLES}, got {style!r}")


def class_scene(label: int, rng: np.random.Generator, style: str = "broad") -> Scene:
    """The scene behind ``sample_class_image``: one shape of kind ``CLASS_NAMES[label]`` (see CLASS_STYLES)."""
    if not isinstance(label, (int, np.integer)) or not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be an int in [0, {NUM_CLASSES}), got {label!r}")
    _check_style(style)
    kind = KINDS[int(label)]
    if style == "broad":
        shape = random_shape(rng, kind=kind, size_range=(0.3, 0.7), colour_jitter=20)
        return Scene(shapes=[shape], **_random_background(rng, [shape.rgb]))
    offset = rng.uniform(-_GENERATION_OFFSET, _GENERATION_OFFSET, 2)
    centre = (0.5 + float(offset[0]), 0.5 + float(offset[1]))
    shape = random_shape(rng, kind=kind, size_range=(0.55, 0.8), center=centre, texture="solid", colour_jitter=20)
    tilt = min(_MAX_TILT_DEG.get(kind, _GENERATION_TILT_DEG), _GENERATION_TILT_DEG)
    shape.rotation = float(rng.uniform(-tilt, tilt))
    background = _random_background(rng, [shape.rgb], textures=("flat", "gradient"))
    return Scene(shapes=[shape], **background)


def sample_class_image(label: int, rng: np.random.Generator, size: int = 64, style: str = "broad") -> np.ndarray:
    """One uint8 [size, size, 3] image of class ``label`` (a shape kind, see ``CLASS_NAMES``)."""
    return render(class_scene(label, rng, style), size=size)


def make_dataset(n: int, seed: int, size: int = 64, style: str = "broad") -> tuple[np.ndarray, np.ndarray]:
    """``n`` class images of ``style`` (see ``CLASS_STYLES``) and their labels: (uint8 [n, size, size, 3], int64 [n]).

    Classes are balanced (counts differ by at most one) and shuffled; the same ``seed`` always gives
    the same data. Use disjoint seeds for data that must be held out from each other.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_style(style)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % NUM_CLASSES)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = sample_class_image(int(label), rng, size, style)
    return images, labels
