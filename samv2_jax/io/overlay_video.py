"""The overlay video: frames encoded by PyAV, muxed here one frame at a time.

FFmpeg's own MP4 muxer closes a fragment only when the next frame arrives (and its Matroska
muxer holds frames longer), so a killed process would lose finished frames. Here each frame
becomes one self-contained fragment (MP4) or cluster (Matroska), written straight to the file
descriptor by an encoder with no frame delay: once `write()` returns for frame k, frames
0..k decode.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

from samv2_jax.io.files import write_all

__all__ = ["OverlayVideoWriter"]


# --- overlay video: encoder plus a minimal per-frame muxer ------------------------------------

def _annexb_nals(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    nals = []
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:end].rstrip(b"\x00")  # a 4-byte start code leaves a zero behind
        if nal:
            nals.append(nal)
    return nals


def _avcc_sample(data: bytes) -> bytes:
    """Annex B access unit -> 4-byte length-prefixed NAL units (what MP4/Matroska carry)."""
    if data[:3] != b"\x00\x00\x01" and data[:4] != b"\x00\x00\x00\x01":
        return data  # already length-prefixed
    return b"".join(struct.pack(">I", len(n)) + n for n in _annexb_nals(data))


def _avc_config(extradata: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (avcC) from the encoder's Annex B SPS/PPS."""
    if extradata[:1] == b"\x01":
        return extradata
    nals = _annexb_nals(extradata)
    sps = [n for n in nals if n[0] & 0x1F == 7]
    pps = [n for n in nals if n[0] & 0x1F == 8]
    if not sps or not pps:
        raise RuntimeError("the H.264 encoder gave no SPS/PPS in its global header")
    rec = bytes([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    rec += b"".join(struct.pack(">H", len(n)) + n for n in sps)
    rec += bytes([len(pps)]) + b"".join(struct.pack(">H", len(n)) + n for n in pps)
    if sps[0][1] in (100, 110, 122, 144):
        # High profiles append chroma format and bit depths; we always encode 8-bit 4:2:0.
        rec += bytes([0xFC | 1, 0xF8 | 0, 0xF8 | 0, 0])
    return rec


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _descriptor(tag: int, payload: bytes) -> bytes:
    n = len(payload)
    size = [n & 0x7F]
    n >>= 7
    while n:
        size.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes([tag, *size]) + payload


class _Mp4Muxer:
    """Fragmented MP4: ftyp + moov with no samples, then one moof + mdat per frame.

    Each fragment is complete on its own, so a file cut after any fragment still plays.
    """

    def __init__(self, codec: str, extradata: bytes, width: int, height: int, rate: Fraction):
        self.timescale = rate.numerator
        self.frame_ticks = rate.denominator
        self.h264 = codec == "libx264"
        if self.h264:
            config = _box(b"avcC", _avc_config(extradata))
            entry_kind, brands = b"avc1", [b"isom", b"iso2", b"iso6", b"avc1", b"mp41"]
        else:  # MPEG-4 Part 2: the VOL header rides in an esds descriptor
            decoder_specific = _descriptor(5, extradata)
            decoder_config = _descriptor(
                4, bytes([0x20, 0x11]) + bytes(3) + struct.pack(">II", 0, 0) + decoder_specific)
            config = _full_box(b"esds", 0, 0, _descriptor(
                3, struct.pack(">HB", 1, 0) + decoder_config + _descriptor(6, b"\x02")))
            entry_kind, brands = b"mp4v", [b"isom", b"iso2", b"iso6", b"mp41"]
        sample_entry = _box(
            entry_kind, bytes(6), struct.pack(">H", 1), bytes(16),
            struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1), bytes(32),
            struct.pack(">Hh", 0x18, -1), config)
        stbl = _box(b"stbl", _full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
                    _full_box(b"stts", 0, 0, bytes(4)), _full_box(b"stsc", 0, 0, bytes(4)),
                    _full_box(b"stsz", 0, 0, bytes(8)), _full_box(b"stco", 0, 0, bytes(4)))
        minf = _box(b"minf", _full_box(b"vmhd", 0, 1, bytes(8)),
                    _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1),
                                            _full_box(b"url ", 0, 1))),
                    stbl)
        mdia = _box(b"mdia",
                    _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, self.timescale, 0,
                                                         0x55C4, 0)),  # language "und"
                    _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\0"),
                    minf)
        tkhd = _full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, 0), bytes(8),
                         struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX,
                         struct.pack(">II", width << 16, height << 16))
        mvhd = _full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, self.timescale, 0,
                                                    0x10000, 0x100), bytes(10), _MATRIX,
                         bytes(24), struct.pack(">I", 2))
        mvex = _box(b"mvex", _full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 0, 0, 0)))
        self.header = (_box(b"ftyp", b"isom", struct.pack(">I", 0x200), *brands)
                       + _box(b"moov", mvhd, _box(b"trak", tkhd, mdia), mvex))
        self.sequence = 0

    def _moof(self, decode_time: int, size: int, keyframe: bool, data_offset: int) -> bytes:
        # sample_depends_on=2 for intra frames; otherwise depends_on=1 plus the non-sync bit.
        flags = 0x02000000 if keyframe else 0x01010000
        trun = _full_box(b"trun", 0, 0x000701,
                         struct.pack(">IiIII", 1, data_offset, self.frame_ticks, size, flags))
        traf = _box(b"traf", _full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),
                    _full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time)), trun)
        return _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", self.sequence)), traf)

    def packet(self, data: bytes, keyframe: bool, index: int) -> bytes:
        if self.h264:
            data = _avcc_sample(data)
        self.sequence += 1
        decode_time = index * self.frame_ticks
        moof_size = len(self._moof(decode_time, len(data), keyframe, 0))
        moof = self._moof(decode_time, len(data), keyframe, moof_size + 8)
        return moof + _box(b"mdat", data)


def _ebml_id(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def _ebml_size(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:  # all ones is reserved for "unknown size"
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError("EBML element too large")


def _el(element_id: int, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return _ebml_id(element_id) + _ebml_size(len(payload)) + payload


def _el_uint(element_id: int, value: int) -> bytes:
    return _el(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


class _MatroskaMuxer:
    """Matroska/WebM: a segment of unknown size, then one complete cluster per frame."""

    _CODEC_IDS = {"libx264": "V_MPEG4/ISO/AVC", "mpeg4": "V_MPEG4/ISO/ASP",
                  "libvpx": "V_VP8", "libvpx-vp9": "V_VP9"}

    def __init__(self, codec: str, extradata: bytes, width: int, height: int, rate: Fraction,
                 doc_type: str):
        self.h264 = codec == "libx264"
        self.rate = rate
        private = b""
        if self.h264:
            private = _el(0x63A2, _avc_config(extradata))
        elif extradata:
            private = _el(0x63A2, extradata)
        ebml = _el(0x1A45DFA3, _el_uint(0x4286, 1), _el_uint(0x42F7, 1), _el_uint(0x42F2, 4),
                   _el_uint(0x42F3, 8), _el(0x4282, doc_type.encode()), _el_uint(0x4287, 4),
                   _el_uint(0x4285, 2))
        info = _el(0x1549A966, _el_uint(0x2AD7B1, 1_000_000),  # timestamps in milliseconds
                   _el(0x4D80, b"samv2-jax"), _el(0x5741, b"samv2-jax"))
        track = _el(0xAE, _el_uint(0xD7, 1), _el_uint(0x73C5, 1), _el_uint(0x83, 1),
                    _el_uint(0x9C, 0), _el(0x86, self._CODEC_IDS[codec].encode()), private,
                    _el_uint(0x23E383, round(1e9 / rate)),
                    _el(0xE0, _el_uint(0xB0, width), _el_uint(0xBA, height)))
        # Unknown segment size: a reader takes whatever clusters are there.
        segment_start = _ebml_id(0x18538067) + b"\x01\xff\xff\xff\xff\xff\xff\xff"
        self.header = ebml + segment_start + info + _el(0x1654AE6B, track)

    def packet(self, data: bytes, keyframe: bool, index: int) -> bytes:
        if self.h264:
            data = _avcc_sample(data)
        millis = round(index * 1000 / self.rate)
        block = b"\x81" + struct.pack(">hB", 0, 0x80 if keyframe else 0) + data
        return _el(0x1F43B675, _el_uint(0xE7, millis), _el(0xA3, block))


# extension -> (container, codecs it can carry in order of preference)
_CONTAINERS = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".m4v": ("mp4", ("libx264", "mpeg4")),
    ".mov": ("mp4", ("libx264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "mpeg4", "libvpx", "libvpx-vp9")),
    ".webm": ("webm", ("libvpx", "libvpx-vp9")),
}


def _frame_rate(fps) -> Fraction:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    exact = Fraction(fps) if isinstance(fps, (int, Fraction)) else Fraction(value)
    # 1001 keeps NTSC rates exact (29.97002997 -> 30000/1001) and the numbers small enough
    # for MPEG-4 Part 2, whose time base denominator must stay under 65536.
    return exact.limit_denominator(1001)


def _pick_codec(av, ext: str, codecs, codec: str | None) -> str:
    """The requested encoder, or the first of the container's that this PyAV build has."""
    if codec is None:
        available = [c for c in codecs if c in av.codecs_available]
        if not available:
            raise RuntimeError(f"this PyAV build has none of the encoders {codecs} that "
                               f"{ext} files can hold here")
        return available[0]
    if codec not in codecs:
        raise ValueError(f"codec {codec!r} is not supported in {ext} files; choose one of "
                         f"{', '.join(codecs)}")
    if codec not in av.codecs_available:
        raise ValueError(f"this PyAV build has no {codec!r} encoder")
    return codec


def _open_encoder(av, codec: str, width: int, height: int, rate: Fraction):
    """An encoder that emits every frame at once (no B-frames, no look-ahead), yuv420p."""
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
    cc.time_base = 1 / rate
    cc.framerate = rate
    cc.gop_size = max(1, round(2 * rate))  # a keyframe every ~2 s, for seeking
    cc.max_b_frames = 0
    if codec in ("libx264", "mpeg4"):
        # Parameter sets go in the container header, as MP4 and Matroska expect.
        cc.flags |= av.codec.context.Flags.global_header
    if codec == "libx264":
        cc.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "20"}
    elif codec == "mpeg4":
        cc.qscale = True
        cc.global_quality = 3 * 118  # -q:v 3 (118 = FF_QP2LAMBDA)
    else:
        cc.options = {"lag-in-frames": "0", "deadline": "realtime", "cpu-used": "8"}
        cc.bit_rate = max(1_000_000, int(width * height * float(rate) * 0.2))
    cc.open()
    return cc


class OverlayVideoWriter:
    """Encode RGB frames into .mp4/.m4v/.mov (fragmented MP4) or .mkv/.webm (Matroska).

    Interrupt safety: once write() has returned for frame k, frames 0..k are on disk in a file
    that decodes, even if the process is then killed. PyAV's own muxers cannot promise that
    (FFmpeg's MP4 muxer closes a fragment only when the next frame arrives, its Matroska muxer
    buffers whole clusters), so the container is written here, one fragment or cluster per
    frame, with the encoder set to emit every frame at once (no B-frames, no look-ahead).
    Before the first frame, an MP4 file opens with no frames; FFmpeg refuses a Matroska file
    that has no cluster yet.

    yuv420p needs even sizes: an odd width or height is padded by one pixel, repeating the last
    column or row, so the video is then one pixel wider or taller than the frames given.
    """

    def __init__(self, path, width: int, height: int, fps: float, codec: str | None = None):
        import av

        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in _CONTAINERS:
            raise ValueError(f"{str(self.path)!r}: unknown video container {ext or '(none)'!r}; "
                             f"use one of {', '.join(sorted(_CONTAINERS))}")
        container, codecs = _CONTAINERS[ext]
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.width, self.height = int(width), int(height)
        self.rate = _frame_rate(fps)
        self.codec = _pick_codec(av, ext, codecs, codec)
        self.coded_width = self.width + (self.width & 1)
        self.coded_height = self.height + (self.height & 1)
        self._cc = _open_encoder(av, self.codec, self.coded_width, self.coded_height, self.rate)
        extradata = bytes(self._cc.extradata or b"")
        if container == "mp4":
            self._mux = _Mp4Muxer(self.codec, extradata, self.coded_width, self.coded_height,
                                  self.rate)
        else:
            self._mux = _MatroskaMuxer(self.codec, extradata, self.coded_width,
                                       self.coded_height, self.rate, container)
        self._av = av
        self._fd: int | None = None
        self._failed: str | None = None
        self.frames_written = 0
        self._packets = 0
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as e:
            raise OSError(e.errno, f"cannot create the overlay video {str(self.path)!r}: "
                          f"{e.strerror}") from e
        self._good_size = 0
        self._append(self._mux.header)

    def _append(self, data: bytes) -> None:
        try:
            write_all(self._fd, data)
        except OSError as e:
            # Cut back the partial fragment, so the file still ends on a whole frame.
            try:
                os.ftruncate(self._fd, self._good_size)
                os.lseek(self._fd, self._good_size, os.SEEK_SET)
            except OSError:
                pass
            self._failed = (f"writing {str(self.path)!r} failed ({e.strerror or e}); frames "
                            f"0..{self.frames_written - 1} are in it")
            raise OSError(e.errno, self._failed) from e
        self._good_size += len(data)

    def _mux_packets(self, packets) -> None:
        for p in packets:
            index = p.pts if p.pts is not None else self._packets
            self._append(self._mux.packet(bytes(p), bool(p.is_keyframe), int(index)))
            self._packets += 1

    def write(self, frame_rgb: np.ndarray) -> None:
        if self._fd is None:
            raise ValueError(f"the overlay video {str(self.path)!r} is closed")
        if self._failed:
            # The encoder's reference frames no longer match the file: stop here.
            raise OSError(self._failed)
        frame = np.asarray(frame_rgb)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a [{self.height}, {self.width}, 3] uint8 RGB frame, "
                             f"got {frame.shape} {frame.dtype}")
        pad_h, pad_w = self.coded_height - self.height, self.coded_width - self.width
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        self._last_start = self._good_size
        self._mux_packets(self._cc.encode(vf))
        self.frames_written += 1

    def drop_last(self) -> None:
        """Cut the last frame written back out of the file (it could not be written to the
        other outputs). The encoder has seen it, so no frame can follow: the writer stops."""
        if self._fd is None or self.frames_written == 0:
            return
        os.ftruncate(self._fd, self._last_start)
        os.lseek(self._fd, self._last_start, os.SEEK_SET)
        self._good_size = self._last_start
        self.frames_written -= 1
        self._failed = (f"frame {self.frames_written} was taken back out of "
                        f"{str(self.path)!r}; frames 0..{self.frames_written - 1} are in it")

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            if not self._failed:
                self._mux_packets(self._cc.encode(None))  # drain the encoder, if it held any
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


