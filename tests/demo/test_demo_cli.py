"""``mmaccel demo``'s refusals and warnings before Gradio starts, and the pieces the page is made of."""

from __future__ import annotations

import json
import socket

import pytest

from mmaccel.cli import main
from mmaccel.demo import DemoSide, parse_params, stats_table, tradeoff_points


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
