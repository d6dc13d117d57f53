"""Official model names -> downloaded checkpoint -> converted model, each step done once.

    cache_dir()/<name>.pt          the official checkpoint, as downloaded
    cache_dir()/<name>.pt.sha256   its SHA-256, recorded after it passed every check
    cache_dir()/<name>/            the converted model (samv2_jax.weights.store format)

Files only ever appear under their final names complete and checked: downloads go to
`<name>.pt.part` and conversions to a temporary directory, each renamed into place at the end.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from samv2_jax.weights.store import CONFIG_FILE, Model, load

DOWNLOAD_URL_ENV = "SAMV2_JAX_DOWNLOAD_URL"
HOME_ENV = "SAMV2_JAX_HOME"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    name: str
    url: str
    sha256: str | None = None  # when set, a download must match it
    size: int | None = None  # bytes; when set, a download must have it


_RELEASES = {  # release folder on dl.fbaipublicfiles.com -> model names in it
    "https://dl.fbaipublicfiles.com/segment_anything_2/072824/":
        ("sam2_hiera_tiny", "sam2_hiera_small", "sam2_hiera_base_plus", "sam2_hiera_large"),
    "https://dl.fbaipublicfiles.com/segment_anything_2/092824/":
        ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus",
         "sam2.1_hiera_large"),
}

# The official SHA-256 values could not be obtained offline, so none is pinned: a download is
# checked for its announced length and every zip member's CRC-32, and its hash is recorded so
# that later runs detect a changed file.
OFFICIAL: dict[str, Checkpoint] = {
    name: Checkpoint(name=name, url=f"{base}{name}.pt")
    for base, names in _RELEASES.items() for name in names
}


class OfflineError(OSError):
    """A checkpoint could not be downloaded; the message says how to supply it by hand."""


def cache_dir() -> Path:
    """$SAMV2_JAX_HOME/models, else $XDG_CACHE_HOME (or ~/.cache)/samv2_jax/models."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "samv2_jax" / "models"


def _known_names() -> str:
    return ", ".join(OFFICIAL)


def _closest(name: str) -> str:
    close = difflib.get_close_matches(name, list(OFFICIAL), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _lookup(name: str) -> Checkpoint:
    try:
        return OFFICIAL[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; the official models are {_known_names()}"
                         f"{_closest(name)}") from None


def _source_url(ckpt: Checkpoint) -> str:
    mirror = os.environ.get(DOWNLOAD_URL_ENV)
    if mirror:
        return mirror.rstrip("/") + f"/{ckpt.name}.pt"
    return ckpt.url


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _record_path(final: Path) -> Path:
    return final.with_name(final.name + ".sha256")


def _read_record(record: Path) -> str | None:
    try:
        fields = record.read_text().split()
    except FileNotFoundError:
        return None
    return fields[0].lower() if fields else None


def _write_record(record: Path, digest: str, filename: str) -> None:
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(f"{digest}  {filename}\n")
    os.replace(tmp, record)


def _content_problem(path: Path, ckpt: Checkpoint, digest: str, size: int) -> str | None:
    """Why `path` is not a sound copy of `ckpt`, or None."""
    if ckpt.size is not None and size != ckpt.size:
        return f"it has {size} bytes where the official file has {ckpt.size}"
    if ckpt.sha256 is not None and digest != ckpt.sha256.lower():
        return f"its SHA-256 is {digest}, not the official {ckpt.sha256.lower()}"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member, comparing each CRC-32
            has_pickle = any(n.endswith("/data.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"it is not a complete zip archive ({e})"
    if bad is not None:
        return f"member {bad!r} fails its CRC-32 check"
    if not has_pickle:
        return "it is a zip archive but not a PyTorch checkpoint"
    return None


def _offline_message(ckpt: Checkpoint, url: str, final: Path, reason: object) -> str:
    return (f"could not download {ckpt.name} from {url} ({reason}). Without network access, "
            f"fetch {url} elsewhere and put it at {final}; it is used from there without "
            "downloading.")


def _check_cached(final: Path, ckpt: Checkpoint) -> None:
    record = _record_path(final)
    recorded = _read_record(record)
    digest = _sha256_of(final)
    if recorded is not None:
        if digest != recorded:
            raise ValueError(
                f"{final} has changed since it was downloaded (SHA-256 {digest}, recorded "
                f"{recorded} in {record}), so it is corrupted; delete it and run again to "
                "download it anew")
        problem = None
        if ckpt.sha256 is not None and digest != ckpt.sha256.lower():
            problem = f"its SHA-256 is {digest}, not the official {ckpt.sha256.lower()}"
    else:  # placed by hand: check it fully once, then record it
        problem = _content_problem(final, ckpt, digest, final.stat().st_size)
    if problem:
        raise ValueError(f"{final} is not a sound copy of {ckpt.name}: {problem}; delete it and "
                         "run again to download it anew")
    if recorded is None:
        _write_record(record, digest, final.name)


def download(name: str, *, directory: Path | None = None, progress: bool = True,
             timeout: float = 20.0) -> Path:
    """Path of `<directory>/<name>.pt` (default directory: `cache_dir()`), downloaded if missing.

    A fresh download must have the announced length, pass every zip member's CRC-32 and match
    the pinned SHA-256 if there is one before it takes its final name; its SHA-256 is recorded
    and a cached file is checked against that record on every later call.
    Raises OfflineError when the server cannot be reached, ValueError for a damaged file.
    """
    ckpt = _lookup(name)
    directory = Path(directory).expanduser() if directory is not None else cache_dir()
    final = directory / f"{name}.pt"
    if final.is_file():
        _check_cached(final, ckpt)
        return final

    from tqdm import tqdm

    url = _source_url(ckpt)
    directory.mkdir(parents=True, exist_ok=True)
    part = directory / f"{name}.pt.part"
    request = urllib.request.Request(url, headers={"User-Agent": "samv2-jax"})
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts
            raise OfflineError(_offline_message(ckpt, url, final, _reason(e))) from e
        h, received = hashlib.sha256(), 0
        with response, open(part, "wb") as out, tqdm(
                total=_content_length(response), unit="B", unit_scale=True, unit_divisor=1024,
                desc=final.name, file=sys.stderr, disable=not progress, leave=False) as bar:
            expected = bar.total
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except http.client.IncompleteRead:
                    break  # the length check below reports it
                except (OSError, http.client.HTTPException) as e:
                    raise OfflineError(_offline_message(ckpt, url, final, _reason(e))) from e
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        digest = h.hexdigest()
        if expected is not None and received != expected:
            problem = f"the server announced {expected} bytes but sent {received}"
        else:
            problem = _content_problem(part, ckpt, digest, received)
        if problem:
            raise ValueError(f"the download of {ckpt.name} from {url} is damaged: {problem}; "
                             "nothing was kept, run again to retry")
        _write_record(_record_path(final), digest, final.name)
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
    return final


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _convert(pt_path: Path, out_dir: Path) -> None:
    from samv2_jax.weights.official import convert_checkpoint

    convert_checkpoint(pt_path, out_dir)


def _converted(name: str, progress: bool) -> Path:
    root = cache_dir()
    target = root / name
    if (target / CONFIG_FILE).is_file():
        return target
    pt_path = download(name, directory=root, progress=progress)
    if progress:
        print(f"converting {pt_path} into {target} (once)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.converting-", dir=root))
    try:
        _convert(pt_path, tmp)
        if (target / CONFIG_FILE).is_file():
            return target  # another process finished first; keep its copy
        if target.is_dir():  # left by hand or by something else: not a complete model
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / CONFIG_FILE).is_file():
                raise
            # another process renamed its copy into place between the checks and here
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(spec: str, image_size: int | None = None, *, progress: bool = True) -> Model:
    """A model from an official name, a `.pt` checkpoint or a converted model directory.

    An existing path wins over a name. A name is downloaded into `cache_dir()` if needed and
    converted there once; later calls load the converted directory, without torch.
    """
    path = Path(spec).expanduser()
    if path.exists():
        return load(path, image_size)
    if spec in OFFICIAL:
        return load(_converted(spec, progress), image_size)
    raise ValueError(f"{spec!r} is neither an existing checkpoint file or model directory nor "
                     f"an official model name ({_known_names()}){_closest(spec)}")
