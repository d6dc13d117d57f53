"""Every code block of the README runs as written: the Python blocks top to bottom in one fresh
interpreter, the shell blocks line by line, in a folder with a stand-in for the official
checkpoint (re-drawn weights, stored at input size 256 so the runs are quick) in the model
cache, and no network."""

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import official

ROOT = Path(__file__).resolve().parents[1]
NAME = "sam2.1_hiera_tiny"
SIZE = 256


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def test_blocks_are_found():
    text = (ROOT / "README.md").read_text()
    assert len(code_blocks(text, "python")) >= 4 and len(code_blocks(text, "bash")) >= 2
    assert code_blocks("x\n```python\na = 1\n```\n", "python") == ["a = 1\n"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from samv2_jax.weights.official import convert_state_dict
    from samv2_jax.weights.store import Model, save_model

    root = tmp_path_factory.mktemp("readme")
    torch_model = official.build_official(NAME, SIZE)
    sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    cfg, params = convert_state_dict(sd, image_size=SIZE)
    save_model(Model(cfg, params), root / "home" / "models" / NAME)
    with socket.socket() as s:  # a port nobody listens on: any download attempt fails fast
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, SAMV2_JAX_HOME=str(root / "home"),
               SAMV2_JAX_DOWNLOAD_URL=f"http://127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    work = root / "work"
    work.mkdir()
    return work, env


def _run(args, work, env, **kw):
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True,
                          timeout=900, **kw)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def _shell_lines(block: str) -> list[str]:
    lines = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if not line or line.startswith("#"):
            continue
        # the set-up line installs the package, which the test environment already has
        line = line.removeprefix("pip install -e . && ")
        if line == "bash scripts/test.sh":  # this very test suite
            continue
        lines.append(line)
    return lines


def test_shell_blocks_run(workspace):
    work, env = workspace
    lines = [line for b in code_blocks((ROOT / "README.md").read_text(), "bash")
             for line in _shell_lines(b)]
    assert any(line.startswith("samv2 track") for line in lines)
    for line in lines:
        for part in line.split(" && "):
            assert shlex.split(part)[0] == "samv2", part
            _run(shlex.split(part), work, env)
    # the main job wrote what the README says it writes
    assert sorted(p.name for p in (work / "results").iterdir()) == ["masks", "overlay.mp4",
                                                                   "results.json"]
    assert len(list((work / "results" / "masks").glob("*.png"))) == 24
    assert (work / "mask.png").is_file() and (work / "two" / "results.json").is_file()


def test_python_blocks_run_top_to_bottom(workspace):
    work, env = workspace
    if not (work / "sample.mp4").exists():  # the data the shell block makes
        _run(["samv2", "sample", "sample.mp4"], work, env)
        _run(["samv2", "sample", "photo.jpg"], work, env)
    script = "\n".join(code_blocks((ROOT / "README.md").read_text(), "python"))
    done = _run([sys.executable, "-c", script + "\nprint('README OK')"], work, env)
    assert done.stdout.strip().endswith("README OK")
