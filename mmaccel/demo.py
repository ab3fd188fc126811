"""``mmaccel demo``: one Gradio page where plain AR and a chosen method generate side by side on one seed.

The page is the core's; each modality contributes a tab through the ``mmaccel.demo`` entry-point group (value:
``demo_tab() -> DemoTab``), so the core never imports a modality. A tab says what its inputs are (conditions,
methods), loads a model folder, and runs one side by side comparison; the core lays out inputs, both outputs, the
acceptance maps, the stats and the speed-up, and a trade-off plot read from a bench JSON. Nothing is fetched from
the network: analytics are off and the theme uses the system's fonts, not Google's. Tabs show their own media:
images, GIF clips, audio or a 3D mesh, each next to its acceptance map.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before gradio is imported anywhere: it reads this at import.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@dataclass
class DemoSide:
    """One generation the page shows: the output, its acceptance map and what it cost.

    ``output`` is what the tab's output component takes: a PIL image (``image``), the path of a GIF it wrote
    (``video``), ``(sample_rate, waveform)`` (``audio``), the path of a .glb/.obj it wrote, or None for an empty
    mesh (``model3d``). ``tokens`` counts what one AR forward commits (a token; a codec step for speech), so
    ``accepted_length`` is AR's 1 and a method's mean commit per forward.
    """

    output: Any
    acceptance_map: Any
    forwards: int
    tokens: int
    wall_s: float

    @property
    def accepted_length(self) -> float:
        return self.tokens / self.forwards


#: The Gradio output components a tab may name in :attr:`DemoTab.output`.
OUTPUT_KINDS = ("image", "video", "audio", "model3d")


@dataclass
class DemoTab:
    """A modality's tab: its name, its conditions (e.g. class names), its methods and how to run them.

    ``load(folder or None)`` returns a model handle (None: the shipped default model, loaded in the background
    when the page is built) and raises ValueError / FileNotFoundError with a message for the page;
    ``compare(handle, condition, method, params, seed, progress)`` returns ``(plain AR, method)`` as
    :class:`DemoSide`, both on ``seed``. ``output`` names the kind of the outputs (one of :data:`OUTPUT_KINDS`).
    ``conditions`` are the choices of a dropdown labelled ``condition_label``; with ``free_text`` the condition is
    a text box instead, ``conditions[0]`` its starting value and the rest examples. ``notes`` is a line of
    Markdown under the inputs (what the maps and counts mean for this modality).
    """

    name: str
    conditions: list[str]
    methods: list[str]
    default_method: str
    load: Callable[[str | None], Any]
    compare: Callable[..., tuple[DemoSide, DemoSide]]
    output: str = "image"
    condition_label: str = "class"
    free_text: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"demo tab {self.name!r}: output {self.output!r} is not one of {list(OUTPUT_KINDS)}")


_MEDIA_DIR: list[Path] = []


def media_path(suffix: str) -> Path:
    """A fresh path ending in ``suffix`` in this process's demo folder (under the system temp dir, which Gradio
    serves from; removed at exit), for outputs a component takes as a file (GIF clips, meshes)."""
    import atexit
    import shutil
    import tempfile
    import uuid

    if not _MEDIA_DIR:
        _MEDIA_DIR.append(Path(tempfile.mkdtemp(prefix="mmaccel-demo-")))
        atexit.register(shutil.rmtree, _MEDIA_DIR[0], ignore_errors=True)
    return _MEDIA_DIR[0] / f"{uuid.uuid4().hex}{suffix}"


def demo_tabs() -> list[DemoTab]:
    from importlib.metadata import entry_points

    return [ep.load()() for ep in sorted(entry_points(group="mmaccel.demo"), key=lambda ep: ep.name)]


def side_by_side(
    generate: Callable[[str, dict[str, Any]], Any],
    present: Callable[[Any], tuple[Any, Any, int, int]],
    method: str,
    params: dict[str, Any],
    progress: Callable[..., Any],
) -> tuple[DemoSide, DemoSide]:
    """Plain AR, then ``method`` with ``params``: ``generate(name, params)`` runs one (timed alone: the wall time
    is the generation's), ``present(result)`` gives ``(output, acceptance map, forwards, tokens)`` for the page."""
    import time

    sides = []
    for share, name, kwargs in ((0.0, "ar", {}), (0.5, method, params)):
        progress(share, desc=f"{name}: generating")
        start = time.perf_counter()
        result = generate(name, kwargs)
        wall = time.perf_counter() - start
        sides.append(DemoSide(*present(result), wall))
    progress(1.0, desc="done")
    return sides[0], sides[1]


def class_side_by_side(
    pipe: Any,
    label: int,
    method: str,
    params: dict[str, Any],
    seed: int,
    progress: Callable[..., Any],
    present: Callable[[Any], tuple[Any, Any, int, int]],
) -> tuple[DemoSide, DemoSide]:
    """:func:`side_by_side` for a class-conditional pipeline of the diffusers shape
    (``pipe(class_labels=[label], method=..., seed=..., progress=False, **params)``: image, video, mesh)."""

    def generate(name: str, kwargs: dict[str, Any]) -> Any:
        return pipe(class_labels=[label], method=name, seed=seed, progress=False, **kwargs)

    return side_by_side(generate, present, method, params, progress)


def check_folder(folder: str | None) -> Path | None:
    """The model-folder field as a path (None: the default model); a missing folder is refused by name."""
    if folder is None:
        return None
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {folder!r} does not exist")
    return path


def parse_params(text: str) -> dict[str, str]:
    """``"window=8, init=horizontal"`` -> ``{"window": "8", "init": "horizontal"}``; the method types the values."""
    from .params import split_assignment

    return dict(
        split_assignment(part.strip(), "parameters") for part in text.replace(";", ",").split(",") if part.strip()
    )


def stats_table(method: str, ar: DemoSide, fast: DemoSide) -> list[list[Any]]:
    """The stats rows the page shows: forwards, accepted tokens per forward, wall time and speed-up over AR."""
    rows = []
    for name, side in (("ar", ar), (method, fast)):
        rows.append(
            [
                name,
                side.forwards,
                round(side.accepted_length, 3),
                round(side.wall_s, 3),
                round(ar.wall_s / side.wall_s, 2),
            ]
        )
    return rows


STATS_HEADERS = ["method", "forwards", "accepted length", "wall s", "speed-up"]


#: The quality fields of the modalities' bench records (``mmaccel bench <modality> --json``), in the order the
#: trade-off tab offers them: image FID and class accuracy, video domain FVD, speech PER and Frechet distance to
#: AR, mesh Chamfer / Hausdorff / MMD / COV / 1-NNA and validity.
QUALITY_FIELDS = (
    "fid",
    "class_accuracy",
    "fvd_domain",
    "per",
    "frechet_vs_ar",
    "token_agreement_with_ar",
    "chamfer",
    "hausdorff",
    "mmd",
    "cov",
    "nna",
    "valid_rate",
)


def tradeoff_points(path: str) -> list[dict[str, Any]]:
    """Step compression against each quality field (:data:`QUALITY_FIELDS`), one point per record and field of a
    bench JSON at ``path``; a file with several batch sizes labels each point's method with its batch."""
    if not str(path).strip():
        raise ValueError("bench JSON: no path given (e.g. bench/image_default.json)")
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"bench JSON {path!r}: {err}") from None
    if isinstance(records, dict):
        records = records.get("records", [])
    records = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
    batches = {r.get("batch_size") for r in records}
    points = []
    for r in records:
        if not isinstance(r.get("step_compression"), (int, float)):
            continue
        label = str(r.get("method"))
        if len(batches) > 1:
            label = f"{label} (batch {r.get('batch_size')})"
        for metric in QUALITY_FIELDS:
            value = r.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                points.append(
                    {"method": label, "step_compression": r["step_compression"], "metric": metric, "value": value}
                )
    if not points:
        raise ValueError(
            f"bench JSON {path!r} holds no record with step_compression and a quality field "
            f"({', '.join(QUALITY_FIELDS)})"
        )
    return points


def tradeoff_metrics(points: list[dict[str, Any]]) -> list[str]:
    """The quality fields ``points`` hold, in :data:`QUALITY_FIELDS` order."""
    present = {p["metric"] for p in points}
    return [m for m in QUALITY_FIELDS if m in present]


def _output_component(gr, kind: str, **kw):
    """The Gradio component of a tab's outputs (see :class:`DemoSide` for the values each takes)."""
    if kind == "image":
        # PNG, not Gradio's default WebP: what the page shows is the pipeline's output, pixel for pixel
        return gr.Image(format="png", type="pil", height=300, elem_classes=["output-media"], **kw)
    if kind == "video":
        # the tab's GIF file, served as written (Gradio passes a path through untouched); no ffmpeg needed
        return gr.Image(type="filepath", height=300, elem_classes=["output-media"], **kw)
    if kind == "audio":
        return gr.Audio(type="numpy", format="wav", interactive=False, **kw)
    # a three-quarter view from above (the camera's default looks along an axis: a flat silhouette)
    return gr.Model3D(height=300, camera_position=(45, 55, None), **kw)


def _tab(gr, tab: DemoTab, pool) -> None:
    # The shipped default model loads in the background while the page starts; the first Generate waits for it.
    handles: dict[str | None, Any] = {None: pool.submit(tab.load, None)}

    def handle(folder: str) -> Any:
        key = folder.strip() or None
        if key not in handles:
            handles[key] = tab.load(key)
        return handles[key].result() if key is None else handles[key]

    def generate(folder, condition, method, params, seed, progress=gr.Progress()):  # noqa: B008 - how Gradio finds it
        try:
            model = handle(folder)
            ar, fast = tab.compare(model, condition, method, parse_params(params), int(seed), progress)
        except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
            raise gr.Error(str(err)) from None
        rows = stats_table(method, ar, fast)
        speedup = (
            f"**speed-up {rows[1][4]:.2f}x** ({method} vs plain AR, same seed {int(seed)}; a lossless method keeps "
            "AR's distribution, not its sample for each seed)"
        )
        output_update = gr.update(value=fast.output, label=method)
        map_update = gr.update(value=fast.acceptance_map, label=f"acceptance map: {method}")
        return ar.output, output_update, ar.acceptance_map, map_update, rows, speedup

    with gr.Row():
        folder = gr.Textbox(label="model folder (empty: the shipped default model)", elem_id=f"{tab.name}-folder")
        if tab.free_text:
            examples = "; ".join(tab.conditions[1:])
            condition = gr.Textbox(
                value=tab.conditions[0],
                label=tab.condition_label,
                info=f"e.g. {examples}" if examples else None,
                elem_id=f"{tab.name}-text",
            )
        else:
            condition = gr.Dropdown(
                tab.conditions, value=tab.conditions[0], label=tab.condition_label, elem_id=f"{tab.name}-class"
            )
        method = gr.Dropdown(tab.methods, value=tab.default_method, label="method", elem_id=f"{tab.name}-method")
        params = gr.Textbox(label="method parameters (name=value, ...)", elem_id=f"{tab.name}-params")
        seed = gr.Number(value=0, precision=0, label="seed", elem_id=f"{tab.name}-seed")
    if tab.notes:
        gr.Markdown(tab.notes)
    button = gr.Button("Generate", variant="primary", elem_id=f"{tab.name}-generate")
    with gr.Row():
        ar_out = _output_component(gr, tab.output, label="plain AR", elem_id=f"{tab.name}-ar")
        fast_out = _output_component(gr, tab.output, label="method", elem_id=f"{tab.name}-method-output")
    with gr.Row():
        ar_map = gr.Image(
            format="png", type="pil", height=320, label="acceptance map: plain AR", elem_id=f"{tab.name}-ar-map"
        )
        fast_map = gr.Image(
            format="png", type="pil", height=320, label="acceptance map: method", elem_id=f"{tab.name}-method-map"
        )
    speedup = gr.Markdown(elem_id=f"{tab.name}-speedup")
    stats = gr.Dataframe(headers=STATS_HEADERS, label="stats", interactive=False, elem_id=f"{tab.name}-stats")
    button.click(
        generate, [folder, condition, method, params, seed], [ar_out, fast_out, ar_map, fast_map, stats, speedup]
    )


def _tradeoff_tab(gr, bench_json: str | None) -> None:
    with gr.Row():
        path = gr.Textbox(
            value=bench_json or "",
            label="bench JSON (mmaccel bench image|video|speech|mesh --json ...)",
            elem_id="tradeoff-path",
        )
        metric = gr.Dropdown(list(QUALITY_FIELDS), value=QUALITY_FIELDS[0], label="quality", elem_id="tradeoff-metric")
    show = gr.Button("Plot", elem_id="tradeoff-plot-button")
    plot = gr.ScatterPlot(
        x="step_compression",
        y="value",
        color="method",
        label="step compression vs quality",
        elem_id="tradeoff-plot",
    )

    def points(p: str, m: str):
        import pandas as pd

        try:
            found = tradeoff_points(p)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        metrics = tradeoff_metrics(found)
        m = m if m in metrics else metrics[0]  # the file's own quality fields: another modality's are not there
        frame = pd.DataFrame([q for q in found if q["metric"] == m])
        return gr.update(choices=metrics, value=m), gr.update(value=frame, y_title=m)

    show.click(points, [path, metric], [metric, plot])
    metric.input(points, [path, metric], [metric, plot])


def build_demo(bench_json: str | None = None):
    """The page: one tab per registered modality and a trade-off plot tab."""
    from concurrent.futures import ThreadPoolExecutor

    import gradio as gr

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mmaccel-demo-load")
    with gr.Blocks(title="mmaccel demo", analytics_enabled=False) as demo:
        gr.Markdown("# mmaccel: plain AR and an accelerated method, side by side on one seed")
        with gr.Tabs():
            for tab in demo_tabs():
                with gr.Tab(tab.name, elem_id=f"tab-{tab.name}"):
                    _tab(gr, tab, pool)
            with gr.Tab("trade-off", elem_id="tab-trade-off"):
                _tradeoff_tab(gr, bench_json)
    return demo


#: Gradio's default theme fetches Google fonts; these are the browser's own.
SYSTEM_FONTS = (["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "monospace"])


#: Generated images are small (64 px for the default model): Gradio's scale-down would show them so; fill the
#: frame instead, pixels kept sharp.
CSS = ".output-media img { object-fit: contain !important; image-rendering: pixelated; }"


def launch(demo, host: str, port: int, block: bool = True):
    """Serve ``demo`` on ``host:port`` with nothing fetched from outside (no share link, no SSR node server)."""
    import gradio as gr

    theme = gr.themes.Default(font=SYSTEM_FONTS[0], font_mono=SYSTEM_FONTS[1])
    return demo.queue().launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        ssr_mode=False,
        mcp_server=False,
        quiet=True,
        theme=theme,
        css=CSS,
        footer_links=[],
    )
