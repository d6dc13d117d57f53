"""Reading torch.save checkpoints without torch: same tensors as torch.load, no code run, damage
detected."""

import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from samv2_jax.weights import official as conv
from samv2_jax.weights.layout import flatten
from samv2_jax.weights.store import load
from samv2_jax.weights.torch_free import read_state_dict_without_torch

import official

NAME = "sam2.1_hiera_tiny"


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()


def _assert_same_as_torch_load(path):
    ours = read_state_dict_without_torch(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    ref = ref.get("model", ref)
    assert list(ours) == list(ref)
    for k, t in ref.items():
        want = _as_numpy(t)
        assert ours[k].dtype == want.dtype, k
        assert ours[k].shape == want.shape, k
        assert np.array_equal(ours[k], want, equal_nan=want.dtype.kind == "f"), k
    return ours


def _mixed_state_dict():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(5, 7, generator=g)
    return {
        "f32": torch.randn(3, 4, generator=g),
        "f16": torch.randn(2, 3, generator=g).half(),
        # values that bfloat16 holds exactly and some it rounds
        "bf16": torch.tensor([1.0, -2.5, 3.14159, 1e-30, 65504.0, float("inf")]).bfloat16(),
        "i64": torch.tensor([[-(2**40), 0, 7]], dtype=torch.int64),
        "i32": torch.arange(-3, 3, dtype=torch.int32),
        "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True, True]),
        "f64": torch.randn(2, 2, dtype=torch.float64, generator=g),
        "big": big,
        "big_t": big.t(),  # non-contiguous view of the same storage
        "big_slice": big[1:4, 2:6:2],  # offset plus strides
        "big_row": big[3],  # shared storage with an offset
        "param": torch.nn.Parameter(torch.randn(4, generator=g)),
        "scalar": torch.tensor(2.75),
        "scalar_view": big[2, 5],  # 0-d tensor inside a bigger storage
        "empty": torch.zeros(0, 3),
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),  # stride 0
    }


@pytest.mark.parametrize("wrapped", [True, False], ids=["model_dict", "bare"])
def test_matches_torch_load_for_dtypes_and_layouts(tmp_path, wrapped):
    sd = _mixed_state_dict()
    path = tmp_path / "mixed.pt"
    torch.save({"model": sd} if wrapped else sd, path)
    ours = _assert_same_as_torch_load(path)
    assert ours["bf16"].dtype == np.float32
    assert ours["bf16"][2] == np.float32(torch.tensor(3.14159).bfloat16().float().item())
    assert ours["scalar"].shape == () and ours["scalar"] == 2.75
    assert ours["bool"].dtype == np.bool_ and ours["i64"][0, 0] == -(2**40)
    np.testing.assert_array_equal(ours["big_t"], ours["big"].T)
    assert ours["big_t"].flags.writeable and not np.shares_memory(ours["big_t"], ours["big"])
    assert ours["f32"].flags.writeable and ours["scalar"].flags.writeable


@pytest.fixture(scope="module")
def sam_pt(tmp_path_factory):
    model = official.build_official(NAME, 256)
    path = tmp_path_factory.mktemp("sam") / f"{NAME}.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_real_sam2_checkpoint_matches_torch_load(sam_pt):
    ours = _assert_same_as_torch_load(sam_pt)
    assert len(ours) > 400 and all(v.dtype == np.float32 for v in ours.values())


def test_load_without_torch_gives_same_params(sam_pt, monkeypatch):
    with_torch = flatten(load(sam_pt).params)

    def no_torch():
        raise ImportError("no torch here")

    monkeypatch.setattr(conv, "_import_torch", no_torch)
    sd = conv.read_state_dict(sam_pt)
    key = conv._EXAMPLE_KEY
    assert sd[key].dtype == np.float32 and sd[key].shape == (96, 3, 7, 7)
    without = flatten(load(sam_pt).params)
    assert set(without) == set(with_torch)
    for k, v in with_torch.items():
        assert np.array_equal(np.asarray(without[k]), np.asarray(v)), k


def test_load_in_a_process_without_torch(sam_pt):
    # sys.modules[...] = None makes every `import torch` fail, as on a machine without it
    code = ("import sys; sys.modules['torch'] = None; import samv2_jax; "
            f"m = samv2_jax.load({str(sam_pt)!r}); print(m.config.name, m.num_params); "
            "print('torch' in sys.modules and sys.modules['torch'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [NAME, "38962754", "False"]


def test_no_torch_fallback_keeps_its_errors(tmp_path, monkeypatch):
    def no_torch():
        raise ImportError(conv._TORCH_MISSING)

    monkeypatch.setattr(conv, "_import_torch", no_torch)
    other = tmp_path / "other.pt"
    torch.save({"model": {"a": torch.ones(2)}}, other)
    with pytest.raises(ValueError, match="holds no SAM 2 tensors"):
        conv.read_state_dict(other)
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {"a": torch.ones(2)}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ImportError, match="needs torch"):  # only torch reads the legacy format
        conv.read_state_dict(legacy)


# --- hand-made archives ------------------------------------------------------------------------


class _Stored:
    """Pickled as a persistent storage reference, as torch.save does for a tensor's storage."""

    def __init__(self, key, numel, storage_type=torch.FloatStorage):
        self.key, self.numel, self.storage_type = key, numel, storage_type


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Stored):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _write_archive(path, obj, members: dict, byteorder="little"):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", byteorder)
        for key, data in members.items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")


def test_handmade_archive_reads(tmp_path):
    values = np.arange(12, dtype=np.float32)
    st = _Stored("0", 12)
    path = tmp_path / "ok.pt"
    _write_archive(path, {"model": {"w": _Tensor(st, 2, (2, 3), (1, 4))}}, {"0": values.tobytes()})
    np.testing.assert_array_equal(read_state_dict_without_torch(path)["w"],
                                  values[2:][np.add.outer(np.arange(2), 4 * np.arange(3))])


def test_big_endian_archive(tmp_path):
    values = np.array([1.5, -2.0, 3.25], np.float32)
    path = tmp_path / "be.pt"
    _write_archive(path, {"w": _Tensor(_Stored("0", 3), 0, (3,), (1,))},
                   {"0": values.astype(">f4").tobytes()}, byteorder="big")
    out = read_state_dict_without_torch(path)["w"]
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize("offset,size,stride,numel,nbytes", [
    (0, (3, 4), (4, 1), 11, 44),  # last element past the end
    (10, (2,), (5,), 12, 48),  # offset plus stride past the end
    (0, (3,), (1,), 4, 12),  # member shorter than the declared element count
    (0, (2,), (-1,), 4, 16),  # negative stride
])
def test_bad_layout_is_an_error_not_a_wild_read(tmp_path, offset, size, stride, numel, nbytes):
    path = tmp_path / "bad.pt"
    _write_archive(path, {"w": _Tensor(_Stored("0", numel), offset, size, stride)},
                   {"0": bytes(nbytes)})
    with pytest.raises(ValueError, match="truncated or damaged"):
        read_state_dict_without_torch(path)


class _RunsCommand:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_forbidden_global_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "x": _RunsCommand(f"touch {marker}")}, path)
    with pytest.raises(ValueError, match=r"refusing to load .*(posix|os)\.system"):
        read_state_dict_without_torch(path)
    assert not marker.exists()


def test_forbidden_global_inside_a_tensor_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Sneaky:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    path = tmp_path / "evil2.pt"
    # hidden where a tensor's storage offset belongs, so it is reached mid-rebuild
    _write_archive(path, {"model": {"w": _Tensor(_Stored("0", 2), Sneaky(), (2,), (1,))}},
                   {"0": bytes(8)})
    with pytest.raises(ValueError, match=r"(__builtin__|builtins)\.eval"):
        read_state_dict_without_torch(path)
    assert not marker.exists()


def test_other_storage_types_are_refused(tmp_path):
    path = tmp_path / "q.pt"
    _write_archive(path, {"w": _Tensor(_Stored("0", 2, torch.UntypedStorage), 0, (2,), (1,))},
                   {"0": bytes(2)})
    with pytest.raises(ValueError, match=r"torch\.(storage\.)?UntypedStorage"):
        read_state_dict_without_torch(path)


# --- damage ------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    g = torch.Generator().manual_seed(1)
    path = tmp_path / "ckpt.pt"
    tensors = {"a": torch.randn(64, 64, generator=g), "b": torch.randn(10, generator=g)}
    torch.save({"model": tensors}, path)
    return path


@pytest.mark.parametrize("keep", [0.5, 0.97, 30 / 32])
def test_truncated_file(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="truncated or damaged; download it again"):
        read_state_dict_without_torch(saved)


def _member_data_offset(path, name):
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(name))
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_byte_in_data_member(saved):
    start, size = _member_data_offset(saved, "/data/0")
    data = bytearray(saved.read_bytes())
    data[start + size // 2] ^= 0x10
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or damaged; download it again.*CRC"):
        read_state_dict_without_torch(saved)


def test_flipped_byte_in_unreferenced_member(saved):
    start, size = _member_data_offset(saved, "/version")
    data = bytearray(saved.read_bytes())
    data[start] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_state_dict_without_torch(saved)


def test_legacy_and_foreign_files(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {"a": torch.ones(2)}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy.*install torch.*re-save"):
        read_state_dict_without_torch(legacy)
    text = tmp_path / "page.pt"
    text.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_state_dict_without_torch(text)
    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_state_dict_without_torch(other_zip)
    with pytest.raises(FileNotFoundError):
        read_state_dict_without_torch(tmp_path / "missing.pt")
