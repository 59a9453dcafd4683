"""Property tests (hypothesis, bounded): for ANY input, the functions that meet users' data either
return something that honours their contract or raise HfrError, never another exception.

- processing.to_rgb_uint8 / preprocess: any size, aspect ratio, channel count and dtype;
- processing.read_image: random and mutated image files;
- ArtifactMeta.from_dict: arbitrary JSON-like dicts, and valid ones with fields replaced;
- data.read_idx: random bytes, and IDX headers with random dimensions and payloads.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hfr_edge.base.artifact import SCHEMA, ArtifactMeta  # noqa: E402
from hfr_edge.base.contract import PRECISIONS  # noqa: E402
from hfr_edge.data import read_idx  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.base import images as processing  # noqa: E402

pytest.importorskip("cv2")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
SUPPORTED = ("uint8", "uint16", "bool", "float16", "float32", "float64")
UNSUPPORTED = ("int8", "int16", "int32", "int64", "uint32", "uint64", "complex64", "complex128", "object", "<U1")


def _array(seed: int, shape, dtype: str, special: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype in ("uint8", "uint16", "int8", "int16", "int32", "int64", "uint32", "uint64"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.startswith("float"):
        a = rng.random(shape).astype(dtype)
        if special == "out-of-range":
            a = (a - 0.5) * 4  # clipped to [0, 1]
        elif special in ("nan", "inf") and a.size:
            a.flat[seed % a.size] = np.nan if special == "nan" else np.inf
        return a
    if dtype.startswith("complex"):
        return (rng.random(shape) + 1j * rng.random(shape)).astype(dtype)
    return np.zeros(shape, dtype=dtype)


images = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(0, 300), st.integers(0, 300),  # H, W (0: an empty image, refused)
    st.sampled_from([None, 1, 3, 4, 2, 5]),  # channels (None: 2-D; 2 and 5 are refused)
    st.sampled_from(SUPPORTED + UNSUPPORTED),
    st.sampled_from(["plain", "plain", "out-of-range", "nan", "inf"]),
)


@settings(max_examples=300, **SETTINGS)
@given(img=images, size=st.integers(1, 300), n=st.integers(1, 3))
def test_preprocess_any_image(img, size, n):
    seed, h, w, c, dtype, special = img
    a = _array(seed, (h, w) if c is None else (h, w, c), dtype, special)
    ok = (h >= 1 and w >= 1 and c in (None, 1, 3, 4) and dtype in SUPPORTED
          and not (dtype.startswith("float") and special in ("nan", "inf")))
    if not ok:
        with pytest.raises(HfrError, match=r"frame 0: (shape|empty image|dtype|float image holds NaN)"):
            processing.preprocess([a] * n, size)
        return
    rgb = processing.to_rgb_uint8(a)
    assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3) and rgb.flags.c_contiguous
    if c in (None, 1):
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    x = processing.preprocess([a] * n, size)
    assert x.dtype == np.float32 and x.shape == (n, 3, size, size) and x.flags.c_contiguous
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
    out = np.full((n + 1, 3, size, size), -1.0, np.float32)  # the runtime's preallocated buffer
    np.testing.assert_array_equal(processing.preprocess([a] * n, size, out=out), x)


@settings(max_examples=60, **SETTINGS)
@given(v=st.integers(0, 255), h=st.integers(1, 300), w=st.integers(1, 300), size=st.integers(1, 300))
def test_preprocess_keeps_a_constant_image_constant(v, h, w, size):
    """Resizing cannot invent structure: a uniform frame of value v is v / 255 everywhere."""
    x = processing.preprocess([np.full((h, w, 3), v, np.uint8)], size)
    np.testing.assert_allclose(x, v / 255.0, atol=1e-6)


def _encode(fmt: str, seed: int, h: int, w: int, mode: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@settings(max_examples=300, **SETTINGS)
@given(fmt=st.sampled_from(["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"]), seed=st.integers(0, 2**32 - 1),
       h=st.integers(1, 24), w=st.integers(1, 24), mode=st.sampled_from(["RGB", "L", "P", "1"]),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10_000)), noise=st.booleans())
def test_read_image_any_file(fmt, seed, h, w, mode, edits, cut, noise):
    """Valid, mutated, truncated or random files: an RGB uint8 image or one HfrError naming the file."""
    if fmt == "JPEG" and mode in ("P", "1"):
        mode = "L"
    data = bytearray(np.random.default_rng(seed).bytes(seed % 512) if noise else _encode(fmt, seed, h, w, mode))
    for pos, byte in edits:
        if data:
            data[pos % len(data)] = byte
    if cut is not None and data:
        data = data[: cut % len(data)]
    fd, path = tempfile.mkstemp(suffix="." + fmt.lower())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
        try:
            rgb = processing.read_image(path)
        except HfrError as exc:
            assert str(exc).startswith(path) and "\n" not in str(exc)
            return
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[0] * rgb.shape[1] <= processing.MAX_PIXELS
    finally:
        os.unlink(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
VALID = ArtifactMeta("onnx", "int8", 64, {"backbone": "efficientnet_lite0"}, {"threshold": 0.3, "low": 0.01},
                     {"opset": 17}).to_dict()
FIELDS = ["schema", "schema_version", "kind", "precision", "image_size", "model", "norm", "threshold", "input",
          "outputs", "opset"]


def _check_meta(d):
    try:
        meta = ArtifactMeta.from_dict(d, "model.onnx.json")
    except HfrError as exc:
        assert str(exc).startswith("model.onnx.json: ") and "\n" not in str(exc)
        return None
    assert meta.kind in ("onnx", "engine") and meta.precision in PRECISIONS
    assert isinstance(meta.image_size, int) and meta.image_size >= 32 and meta.image_size % 32 == 0
    assert isinstance(meta.model, dict) and isinstance(meta.norm, dict)
    assert ArtifactMeta.from_dict(meta.to_dict(), "again") == meta  # what it writes, it reads back
    return meta


@settings(max_examples=300, **SETTINGS)
@given(d=st.one_of(json_values, st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values,
                                                 max_size=8)))
def test_meta_from_any_json(d):
    _check_meta(d)


NEAR = st.sampled_from([SCHEMA, 1, 2, 0, -1, True, "onnx", "engine", "fp16", "fp32", 32, 64, 96, 33, 2**31, 64.0,
                        {"threshold": 1.0}, {"threshold": 0.5, "low": float("nan")}, {"threshold": True, "low": 0}])


@settings(max_examples=300, **SETTINGS)
@given(changes=st.dictionaries(st.sampled_from(FIELDS), st.one_of(json_values, NEAR), max_size=4),
       drop=st.lists(st.sampled_from(FIELDS), max_size=3))
def test_meta_from_near_valid_json(changes, drop):
    d = {**VALID, **changes}
    for k in drop:
        d.pop(k, None)
    _check_meta(d)
    if not changes and not drop:
        assert _check_meta(d) is not None


@settings(max_examples=200, **SETTINGS)
@given(data=st.one_of(
    st.binary(max_size=64),  # anything
    st.tuples(st.sampled_from([b"\x00\x00"]), st.sampled_from([8, 9, 0x0B, 0x0D]), st.integers(0, 4),
              st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), min_size=0, max_size=4),
              st.binary(max_size=200)).map(
        lambda t: t[0] + bytes([t[1], t[2]]) + b"".join(struct.pack(">I", v) for v in t[3]) + t[4])),
       zipped=st.booleans(), ndim=st.integers(1, 3))
def test_read_idx_any_bytes(data, zipped, ndim):
    fd, path = tempfile.mkstemp(suffix="-ubyte")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(gzip.compress(data) if zipped else data)
        try:
            a = read_idx(path, ndim)
        except HfrError as exc:
            assert path in str(exc) and "\n" not in str(exc)
            return
        assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == ndim
        assert a.size == len(data) - 4 - 4 * ndim  # every byte after the header, no more, no fewer
    finally:
        os.unlink(path)
