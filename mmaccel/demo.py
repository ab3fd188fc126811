"""``mmaccel demo``: one Gradio page where plain AR and a chosen method generate side by side on one seed.

The page is the core's; each modality contributes a tab through the ``mmaccel.demo`` entry-point group (value:
``demo_tab() -> DemoTab``), so the core never imports a modality. A tab says what its inputs are (conditions,
methods), loads a model folder, and runs one side by side comparison; the core lays out inputs, both outputs, the
acceptance maps, the stats and the speed-up, and a trade-off plot read from a bench JSON. Nothing is fetched from
the network: analytics are off and the theme uses the system's fonts, not Google's.
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
    """One generation the page shows: the output, its acceptance map and what it cost."""

    output: Any
    acceptance_map: Any
    forwards: int
    tokens: int
    wall_s: float

    @property
    def accepted_length(self) -> float:
        return self.tokens / self.forwards


@dataclass
class DemoTab:
    """A modality's tab: its name, its conditions (e.g. class names), its methods and how to run them.

    ``load(folder or None)`` returns a model handle (None: the shipped default model, preloaded) and raises
    ValueError / FileNotFoundError with a message for the page; ``compare(handle, condition, method, params, seed,
    progress)`` returns ``(plain AR, method)`` as :class:`DemoSide`, both on ``seed``. ``output`` names the Gradio
    component of the outputs (``image`` now; ``video``, ``audio``, ``model3d`` as those modalities land).
    """

    name: str
    conditions: list[str]
    methods: list[str]
    default_method: str
    load: Callable[[str | None], Any]
    compare: Callable[..., tuple[DemoSide, DemoSide]]
    output: str = "image"


def demo_tabs() -> list[DemoTab]:
    from importlib.metadata import entry_points

    return [ep.load()() for ep in sorted(entry_points(group="mmaccel.demo"), key=lambda ep: ep.name)]


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


def tradeoff_points(path: str) -> list[dict[str, Any]]:
    """Step compression against FID and class accuracy, one point per record of a bench JSON at ``path``."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"bench JSON {path!r}: {err}") from None
    if isinstance(records, dict):
        records = records.get("records", [])
    points = []
    for r in records if isinstance(records, list) else []:
        if not isinstance(r, dict) or "step_compression" not in r:
            continue
        for metric in ("fid", "class_accuracy"):
            if isinstance(r.get(metric), (int, float)):
                points.append(
                    {
                        "method": str(r.get("method")),
                        "step_compression": r["step_compression"],
                        "metric": metric,
                        "value": r[metric],
                    }
                )
    if not points:
        raise ValueError(f"bench JSON {path!r} holds no record with step_compression and fid or class_accuracy")
    return points


def _tab(gr, tab: DemoTab) -> None:
    handles: dict[str | None, Any] = {None: tab.load(None)}  # the shipped default model, preloaded

    def handle(folder: str) -> Any:
        key = folder.strip() or None
        if key not in handles:
            handles[key] = tab.load(key)
        return handles[key]

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

    # PNG, not Gradio's default WebP: what the page shows is the pipeline's output, pixel for pixel
    component = {
        "image": lambda **kw: gr.Image(format="png", type="pil", height=300, elem_classes=["output-media"], **kw)
    }[tab.output]
    with gr.Row():
        folder = gr.Textbox(label="model folder (empty: the shipped default model)", elem_id=f"{tab.name}-folder")
        condition = gr.Dropdown(tab.conditions, value=tab.conditions[0], label="class", elem_id=f"{tab.name}-class")
        method = gr.Dropdown(tab.methods, value=tab.default_method, label="method", elem_id=f"{tab.name}-method")
        params = gr.Textbox(label="method parameters (name=value, ...)", elem_id=f"{tab.name}-params")
        seed = gr.Number(value=0, precision=0, label="seed", elem_id=f"{tab.name}-seed")
    button = gr.Button("Generate", variant="primary", elem_id=f"{tab.name}-generate")
    with gr.Row():
        ar_out = component(label="plain AR", elem_id=f"{tab.name}-ar")
        fast_out = component(label="method", elem_id=f"{tab.name}-method-output")
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


def build_demo(bench_json: str | None = None):
    """The page: one tab per registered modality and a trade-off plot tab."""
    import gradio as gr

    with gr.Blocks(title="mmaccel demo", analytics_enabled=False) as demo:
        gr.Markdown("# mmaccel: plain AR and an accelerated method, side by side on one seed")
        with gr.Tabs():
            for tab in demo_tabs():
                with gr.Tab(tab.name):
                    _tab(gr, tab)
            with gr.Tab("trade-off"):
                with gr.Row():
                    path = gr.Textbox(value=bench_json or "", label="bench JSON (mmaccel bench image --json ...)")
                    metric = gr.Radio(["fid", "class_accuracy"], value="fid", label="quality")
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
                        return pd.DataFrame([q for q in tradeoff_points(p) if q["metric"] == m])
                    except ValueError as err:
                        raise gr.Error(str(err)) from None

                show.click(points, [path, metric], [plot])
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
