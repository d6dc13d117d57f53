"""`samv2 convert` and `samv2 info`, and one-line errors without tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samv2_jax.app.cli import build_parser, main

import official

NAME = "sam2_hiera_tiny"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pt_file(tmp_path_factory):
    model = official.build_official(NAME, image_size=256)
    path = tmp_path_factory.mktemp("cli") / "sam2_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_convert_then_info(pt_file, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", str(pt_file), str(out), "--image-size", "512"]) == 0
    said = capsys.readouterr().out
    assert NAME in said and str(out) in said
    assert (out / "config.json").is_file()

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert f"model:      {NAME}" in info
    assert "version:    2.0" in info
    assert "image size: 512" in info
    assert "parameters: 38,946,242" in info
    assert str(out) in info and "converted directory" in info

    # converting onto an existing model needs --overwrite
    assert main(["convert", str(pt_file), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(pt_file), str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "image size: 1024" in capsys.readouterr().out


def test_info_on_a_pt(pt_file, capsys):
    assert main(["info", str(pt_file)]) == 0
    info = capsys.readouterr().out
    assert NAME in info and "official PyTorch checkpoint" in info and str(pt_file) in info


def _one_line_error(capsys, argv, *words):
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("samv2: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for w in words:
        assert w in lines[0]


def test_errors_are_one_line(tmp_path, pt_file, capsys):
    _one_line_error(capsys, ["info", str(tmp_path / "missing.pt")],
                    "neither an existing checkpoint file", "official model name")
    _one_line_error(capsys, ["convert", str(tmp_path / "missing.pt"), str(tmp_path / "o")],
                    "does not exist")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    _one_line_error(capsys, ["convert", str(junk), str(tmp_path / "o")], "not a PyTorch checkpoint")
    half = tmp_path / "half.pt"
    half.write_bytes(pt_file.read_bytes()[:1000])
    _one_line_error(capsys, ["info", str(half)], "truncated")
    _one_line_error(capsys, ["info", str(tmp_path)], "not a converted samv2-jax model")


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "a.pt", "out", "--image-size", "-3"])
    assert info.value.code != 0
    assert "positive integer" in capsys.readouterr().err
    assert main([]) != 0


def test_parser_lists_subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"convert", "info"} <= set(sub.choices)


def test_module_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "samv2_jax.app.cli", "info",
                           str(tmp_path / "x.pt")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("samv2: error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"samv2 {version('samv2-jax')}"


def test_track_says_once_what_a_cpu_frame_costs(monkeypatch, capsys):
    import time

    from samv2_jax.app.commands.track import _CostNote

    clock = iter([0.0, 20.0, 26.0, 32.0, 38.0, 44.0])  # compile, then 6 s per frame
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    note = _CostNote(1024, 200, None)
    for _ in range(6):
        note(None)
    err = capsys.readouterr().err
    assert err.count("s per frame") == 1
    assert "about 6.0 s per frame at 1024" in err and "about 20 min for all 200 frames" in err
    assert "--image-size 512" in err
    assert not _CostNote(512, 200, None).on  # only where a frame is slow


def test_stop_signal_inside_a_gc_callback_is_deferred():
    """A stop signal that lands in a garbage-collection callback (JAX registers one) is not
    raised there, where Python would print it as "Exception ignored" and drop it: it is
    recorded and raised at the next safe point."""
    import gc
    import signal
    import sys

    from samv2_jax.app import options

    seen = []

    def callback(phase, info):
        if phase == "start" and not seen:
            try:
                options.on_stop_signal(signal.SIGTERM, sys._getframe())
                seen.append("deferred")
            except BaseException as e:  # noqa: BLE001 - what the test looks for
                seen.append(type(e).__name__)

    options._PENDING.clear()
    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    try:
        assert seen == ["deferred"]
        with pytest.raises(options.Terminated):
            options.raise_pending()
        # Outside a callback the handler raises at once.
        with pytest.raises(KeyboardInterrupt):
            options.on_stop_signal(signal.SIGINT, sys._getframe())
    finally:
        options._PENDING.clear()
