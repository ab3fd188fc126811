"""``mmaccel demo``'s refusals and warnings before Gradio starts, and the pieces the page is made of."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mmaccel.cli import main
from mmaccel.demo import DemoSide, DemoTab, parse_params, stats_table, tradeoff_metrics, tradeoff_points

BENCH = Path(__file__).parents[2] / "bench"


def test_a_port_in_use_is_refused(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmaccel: error: ") and f"--port {port} is in use" in err


def test_a_port_out_of_range_is_refused(capsys):
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port must be in [1, 65535]" in capsys.readouterr().err


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)])
def test_a_host_off_loopback_is_allowed_with_a_warning(monkeypatch, capsys, host, warned):
    import mmaccel.demo

    launched = []
    monkeypatch.setattr(mmaccel.demo, "build_demo", lambda bench_json=None: "page")
    monkeypatch.setattr(mmaccel.demo, "launch", lambda demo, h, p: launched.append((demo, h, p)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["demo", "--host", host, "--port", str(port)]) == 0
    assert launched == [("page", host, port)]
    err = capsys.readouterr().err
    assert ("no authentication" in err) == warned and (f"--host {host}" in err) == warned


def test_the_image_tab_refuses_a_bad_model_folder_and_a_bad_class(tmp_path):
    from mmaccel.image.demo_tab import demo_tab

    tab = demo_tab()
    with pytest.raises(FileNotFoundError, match="no_model"):
        tab.load(str(tmp_path / "no_model"))
    with pytest.raises(ValueError, match=str(tmp_path)):
        tab.load(str(tmp_path))  # a folder, but of no supported family
    pipe = tab.load(None)
    with pytest.raises(ValueError, match="dragon"):
        tab.compare(pipe, "dragon", "sjd", {}, 0, lambda *a, **k: None)
    with pytest.raises(ValueError, match="window"):
        tab.compare(pipe, "star", "sjd", {"window": "x"}, 0, lambda *a, **k: None)


def test_params_stats_and_tradeoff_points(tmp_path):
    assert parse_params(" window=8, init=horizontal ") == {"window": "8", "init": "horizontal"}
    ar, fast = DemoSide(None, None, 256, 256, 4.0), DemoSide(None, None, 64, 256, 2.0)
    assert stats_table("sjd", ar, fast) == [["ar", 256, 1.0, 4.0, 1.0], ["sjd", 64, 4.0, 2.0, 2.0]]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([{"method": "ar", "step_compression": 1.0, "fid": 3.0, "class_accuracy": 0.9}]))
    assert {p["metric"] for p in tradeoff_points(str(path))} == {"fid", "class_accuracy"}
    path.write_text("[]")
    with pytest.raises(ValueError, match="step_compression"):
        tradeoff_points(str(path))


def test_a_just_stopped_demo_port_is_free_again():
    """A port whose last connection is in TIME_WAIT (a demo stopped a moment ago) is not "in use"."""
    from mmaccel.demo_cli import check_port

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    check_port("127.0.0.1", port)


NOOP = lambda *a, **k: None  # noqa: E731 - the progress callback


@pytest.mark.parametrize(
    "module, output, condition, bad_condition, method",
    [
        ("mmaccel.video.demo_tab", "video", "square-down", "dragon", "sjd"),
        ("mmaccel.mesh.demo_tab", "model3d", "cone", "dragon", "sjd"),
        ("mmaccel.audio.demo_tab", "audio", "the red star", "the dragon", "sjd"),
    ],
)
def test_the_other_tabs_refuse_bad_input_before_generating(tmp_path, module, output, condition, bad_condition, method):
    import importlib

    tab = importlib.import_module(module).demo_tab()
    assert tab.output == output and tab.default_method in tab.methods and "ar" not in tab.methods
    with pytest.raises(FileNotFoundError, match="no_model"):
        tab.load(str(tmp_path / "no_model"))
    with pytest.raises((ValueError, FileNotFoundError), match=str(tmp_path)):
        tab.load(str(tmp_path))  # a folder, but without the model's files (the page shows either)
    model = tab.load(None)
    with pytest.raises(ValueError, match="dragon"):
        tab.compare(model, bad_condition, method, {}, 0, NOOP)
    with pytest.raises(ValueError, match="window"):
        tab.compare(model, condition, method, {"window": "x"}, 0, NOOP)
    with pytest.raises(ValueError, match="nomethod"):
        tab.compare(model, condition, "nomethod", {}, 0, NOOP)


def test_a_tab_names_a_known_output_kind():
    with pytest.raises(ValueError, match="hologram"):
        DemoTab("x", ["a"], ["sjd"], "sjd", lambda f: None, lambda *a: None, output="hologram")


@pytest.mark.parametrize(
    "name, quality",
    [
        ("image_default.json", {"fid", "class_accuracy"}),
        ("video_default.json", {"fvd_domain", "class_accuracy"}),
        ("speech_default.json", {"per", "frechet_vs_ar", "token_agreement_with_ar"}),
        ("mesh_default.json", {"fid", "class_accuracy", "chamfer", "mmd", "cov", "nna", "valid_rate"}),
    ],
)
def test_the_tradeoff_plot_reads_every_modalitys_bench_json(name, quality):
    records = json.loads((BENCH / name).read_text())
    points = tradeoff_points(str(BENCH / name))
    assert quality <= set(tradeoff_metrics(points))
    methods = {p["method"] for p in points}
    if len({r.get("batch_size") for r in records}) > 1:  # one point per method and batch
        assert any("(batch " in m for m in methods)
    assert len({(p["method"], p["metric"]) for p in points}) == len(points)


def test_the_mesh_tabs_glb_carries_the_acceptance_colours():
    import numpy as np
    import trimesh

    from mmaccel.mesh.demo_tab import coloured_glb
    from mmaccel.mesh.render import scale_colour

    box = trimesh.creation.box()
    steps = np.arange(len(box.faces))
    path = coloured_glb(box, steps, int(steps.max()))
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == len(box.faces)
    # each face's three corners carry its forward's colour on the render's scale
    corners = loaded.visual.vertex_colors[loaded.faces][:, :, :3]
    expected = scale_colour(steps / steps.max()).round().astype(np.uint8)
    assert np.array_equal(corners, np.repeat(expected[:, None], 3, 1))


def test_the_tradeoff_plot_names_a_missing_path():
    with pytest.raises(ValueError, match="no path given"):
        tradeoff_points("  ")
