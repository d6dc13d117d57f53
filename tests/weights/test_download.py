"""Official names: download from a (local) server, check, cache, convert once."""

import dataclasses
import hashlib
import http.server
import io
import socket
import threading
import time

import numpy as np
import pytest
import torch

from samv2_jax.config import PRESETS
from samv2_jax.weights import download as models
from samv2_jax.weights.download import OFFICIAL, OfflineError, cache_dir, download, resolve_model
from samv2_jax.weights.layout import flatten
from samv2_jax.weights.store import load

import official

NAME = "sam2.1_hiera_tiny"
SMALL = "sam2_hiera_small"  # served as a small (non-SAM) torch zip where the content is moot


@pytest.fixture(scope="session")
def tiny_pt(tmp_path_factory):
    model = official.build_official(NAME, 256)
    path = tmp_path_factory.mktemp("official") / f"{NAME}.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def _small_checkpoint() -> bytes:
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(0)
    torch.save({"model": {"w": torch.randn(256, 256, generator=g)}}, buf)
    return buf.getvalue()


class _Server:
    """Serves `files` (name -> bytes); `mode` damages responses on purpose."""

    def __init__(self):
        self.files, self.mode, self.requests = {}, "ok", []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                if server.mode == "wrong":
                    body = bytearray(body)
                    body[len(body) // 2] ^= 0xFF
                    body = bytes(body)
                self.send_response(200)
                if server.mode != "no_length":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode in ("truncated", "no_length"):
                    self.wfile.write(body[: len(body) * 2 // 3])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def mirror(server, tiny_pt, monkeypatch, tmp_path):
    server.files = {f"{NAME}.pt": tiny_pt.read_bytes(), f"{SMALL}.pt": _small_checkpoint()}
    server.mode, server.requests = "ok", []
    monkeypatch.setenv("SAMV2_JAX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAMV2_JAX_DOWNLOAD_URL", server.url)
    return server


def test_table_and_cache_dir(tmp_path, monkeypatch):
    assert set(OFFICIAL) == set(PRESETS) and len(OFFICIAL) == 8
    assert OFFICIAL["sam2.1_hiera_base_plus"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt")
    assert OFFICIAL["sam2_hiera_large"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt")
    assert all(c.name == n and c.url.endswith(f"/{n}.pt") for n, c in OFFICIAL.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        OFFICIAL[NAME].sha256 = "x"
    monkeypatch.setenv("SAMV2_JAX_HOME", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h" / "models"
    monkeypatch.delenv("SAMV2_JAX_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "samv2_jax" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "samv2_jax" / "models"


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_once_then_from_cache(mirror, tiny_pt, tmp_path, capsys):
    target = tmp_path / "dl"
    path = download(NAME, directory=target, progress=False)
    assert path == target / f"{NAME}.pt"
    assert path.read_bytes() == tiny_pt.read_bytes()
    assert mirror.requests == [f"/mirror/{NAME}.pt"]
    digest = hashlib.sha256(tiny_pt.read_bytes()).hexdigest()
    assert (target / f"{NAME}.pt.sha256").read_text().split()[0] == digest
    assert _leftovers(target) == [f"{NAME}.pt", f"{NAME}.pt.sha256"]
    assert capsys.readouterr().err == ""  # progress off: silent
    assert download(NAME, directory=target, progress=False) == path
    assert len(mirror.requests) == 1  # the second call did not go to the server


def test_progress_bar_goes_to_stderr(mirror, capsys):
    path = download(SMALL)  # default directory: the cache
    assert path == cache_dir() / f"{SMALL}.pt" and path.is_file()
    captured = capsys.readouterr()
    assert f"{SMALL}.pt" in captured.err and captured.out == ""


@pytest.mark.parametrize("mode", ["truncated", "no_length", "wrong"])
def test_damaged_download_keeps_nothing(mirror, tmp_path, mode):
    mirror.mode = mode
    with pytest.raises(ValueError, match=rf"download of {SMALL} .* is damaged"):
        download(SMALL, directory=tmp_path, progress=False)
    assert _leftovers(tmp_path) == []  # no final file, no .part, no hash record
    mirror.mode = "ok"
    assert download(SMALL, directory=tmp_path, progress=False).is_file()  # a retry works


def test_pinned_sha256(mirror, tmp_path, monkeypatch):
    body = mirror.files[f"{SMALL}.pt"]
    wrong = dataclasses.replace(OFFICIAL[SMALL], sha256="0" * 64)
    monkeypatch.setitem(OFFICIAL, SMALL, wrong)
    with pytest.raises(ValueError, match="SHA-256"):
        download(SMALL, directory=tmp_path / "a", progress=False)
    assert _leftovers(tmp_path / "a") == []
    right = dataclasses.replace(OFFICIAL[SMALL], sha256=hashlib.sha256(body).hexdigest().upper(),
                                size=len(body))
    monkeypatch.setitem(OFFICIAL, SMALL, right)
    assert download(SMALL, directory=tmp_path / "b", progress=False).read_bytes() == body
    monkeypatch.setitem(OFFICIAL, SMALL, dataclasses.replace(right, size=len(body) + 1))
    with pytest.raises(ValueError, match="bytes"):
        download(SMALL, directory=tmp_path / "c", progress=False)


def test_modified_cache_is_an_error(mirror, tmp_path):
    path = download(SMALL, directory=tmp_path, progress=False)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path}.*changed.*delete it"):
        download(SMALL, directory=tmp_path, progress=False)
    assert len(mirror.requests) == 1


def test_file_placed_by_hand(mirror, tmp_path):
    body = mirror.files[f"{SMALL}.pt"]
    (tmp_path / f"{SMALL}.pt").write_bytes(body)
    assert download(SMALL, directory=tmp_path, progress=False) == tmp_path / f"{SMALL}.pt"
    assert mirror.requests == []
    assert (tmp_path / f"{SMALL}.pt.sha256").read_text().split()[0] == \
        hashlib.sha256(body).hexdigest()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / f"{SMALL}.pt").write_bytes(body[: len(body) // 2])
    with pytest.raises(ValueError, match="not a sound copy.*delete it"):
        download(SMALL, directory=broken, progress=False)
    assert not (broken / f"{SMALL}.pt.sha256").exists()


def test_unreachable_server_is_offline_error(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    monkeypatch.setenv("SAMV2_JAX_DOWNLOAD_URL", url)
    t = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        download(NAME, directory=tmp_path, progress=False, timeout=3)
    assert time.perf_counter() - t < 5
    msg = str(info.value)
    assert isinstance(info.value, OSError)
    assert f"{url}/{NAME}.pt" in msg and str(tmp_path / f"{NAME}.pt") in msg
    assert "\n" not in msg
    assert "--model" not in msg  # the library knows no command-line flags; the command adds it
    assert _leftovers(tmp_path) == []


def test_http_error_is_offline_error(mirror, tmp_path):
    mirror.files.clear()
    with pytest.raises(OfflineError, match="HTTP 404"):
        download(NAME, directory=tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_official_url_without_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv("SAMV2_JAX_DOWNLOAD_URL", raising=False)
    seen = []

    def no_network(request, timeout):
        seen.append((request.full_url, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(models.urllib.request, "urlopen", no_network)
    with pytest.raises(OfflineError, match="unreachable"):
        download("sam2_hiera_tiny", directory=tmp_path, progress=False, timeout=7.5)
    assert seen == [(OFFICIAL["sam2_hiera_tiny"].url, 7.5)]


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'sam2.1_hiera_tiney'.*"
                                         r"did you mean 'sam2.1_hiera_tiny'"):
        download("sam2.1_hiera_tiney", directory=tmp_path)
    with pytest.raises(ValueError, match="sam2_hiera_large"):  # lists the names
        download("vit_h", directory=tmp_path)


def _assert_same_params(a, b):
    fa, fb = flatten(a.params), flatten(b.params)
    assert set(fa) == set(fb)
    for k in fa:
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


def test_resolve_name_converts_once(mirror, tiny_pt, monkeypatch):
    real_convert, calls = models._convert, []

    def convert_once(pt_path, out_dir):
        calls.append(out_dir)
        if len(calls) > 1:
            raise AssertionError("converted twice")
        real_convert(pt_path, out_dir)

    monkeypatch.setattr(models, "_convert", convert_once)
    model = resolve_model(NAME, progress=False)
    converted = cache_dir() / NAME
    assert (converted / "config.json").is_file() and (cache_dir() / f"{NAME}.pt").is_file()
    assert [p.name for p in cache_dir().iterdir() if p.name.startswith(".")] == []
    assert calls[0].parent == cache_dir() and calls[0] != converted  # built aside, then renamed
    _assert_same_params(model, load(tiny_pt))
    assert model.config.name == NAME

    again = resolve_model(NAME, image_size=512, progress=False)
    assert len(calls) == 1 and len(mirror.requests) == 1
    assert again.config == model.config.replace(image_size=512)
    _assert_same_params(again, model)


def test_interrupted_conversion_leaves_no_cache(mirror, monkeypatch):
    def crash(pt_path, out_dir):
        (out_dir / "params").mkdir()
        (out_dir / "config.json").write_text("{}")  # looks finished, but is not in place yet
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(NAME, progress=False)
    assert sorted(p.name for p in cache_dir().iterdir()) == [f"{NAME}.pt", f"{NAME}.pt.sha256"]


def test_resolve_paths_and_bad_spec(tiny_pt, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMV2_JAX_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # relative specs below must not find files by accident
    from_pt = resolve_model(str(tiny_pt), image_size=256)
    assert from_pt.config.name == NAME and from_pt.config.image_size == 256
    out = tmp_path / "converted"
    models._convert(tiny_pt, out)
    from_dir = resolve_model(str(out))
    _assert_same_params(from_dir, from_pt)
    assert not (tmp_path / "home").exists()  # paths never touch the cache
    for spec in ("no/such/model.pt", "sam2.1_hiera_tiny.pt", "sam3"):
        with pytest.raises(ValueError, match=r"neither an existing .* nor an official model name"
                                             r".*sam2_hiera_base_plus"):
            resolve_model(spec)
    with pytest.raises(ValueError, match="did you mean 'sam2.1_hiera_tiny'"):
        resolve_model("sam2.1_hiera_tiny.pt")


def test_library_load_takes_an_official_name(mirror, capsys):
    """`samv2_jax.load(name)` goes through the same cache as `--model name`."""
    import samv2_jax

    model = samv2_jax.load(NAME, image_size=128, progress=False)
    assert model.config.name == NAME and model.config.image_size == 128
    assert (cache_dir() / NAME / "config.json").is_file() and len(mirror.requests) == 1
    _assert_same_params(model, resolve_model(NAME, progress=False))
    assert len(mirror.requests) == 1  # converted once, from the cache afterwards
    with pytest.raises(FileNotFoundError, match="official model name: sam2_hiera_tiny"):
        samv2_jax.load("sam2.1_hiera_tiniest")
