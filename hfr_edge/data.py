"""Dataset readers: MVTec AD, plain image folders, MNIST / Fashion-MNIST (IDX files) and
CIFAR-10 (python batches or class folders) as lists of lazily loaded items. numpy + Pillow
only (no torch), so training, evaluation of any artifact and the demo share one reader.

`--format auto` looks at the folder: train/good + test -> mvtec; IDX files -> mnist, or
fashion-mnist when the folder or its parent is named like "fashion" (give --format to say
otherwise); data_batch_1 -> cifar10; train/<class> + test/<class> (>= 2 classes, no "good")
-> cifar10-style class folders; anything else -> a folder of good images.
One-class formats (mnist, fashion-mnist, cifar10) need --normal-class: train on that class,
test on the whole test set with it as normal (label 0) and every other class anomalous.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .base.console import show
from .base.errors import HfrError
from .base import console
from .base.images import (IMAGE_EXTS, is_dir, list_images, preprocess, read_image, read_mask, resize_mask,
                          unreadable_folder)

FORMATS = ("auto", "mvtec", "folder", "mnist", "fashion-mnist", "cifar10")
ONE_CLASS_FORMATS = ("mnist", "fashion-mnist", "cifar10")  # the one-class protocol, --normal-class
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle-boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
MAX_IDX_BYTES = 1 << 31  # refuse IDX headers that promise more data than this


@dataclass(frozen=True)
class Item:
    key: str  # file path, or e.g. "mnist/t10k:123"
    label: int  # 0 normal, 1 anomalous
    defect: str  # "good" for normals, else the defect type / class name
    load: Callable[[], np.ndarray] = field(repr=False, compare=False)  # -> (H, W, 3) uint8 RGB; HfrError if corrupt
    load_mask: Optional[Callable[[], np.ndarray]] = field(repr=False, compare=False)  # -> bool (H, W); None: no masks


@dataclass(frozen=True)
class Dataset:
    root: str  # the folder given
    format: str  # the resolved format (never "auto")
    train: List[Item]  # normal images only
    test: List[Item]  # normal and anomalous images
    has_masks: bool  # True when every test item has load_mask
    normal_class: Optional[str]  # canonical class name for one-class formats, else None


# ---------------------------------------------------------------- image files


def _subdirs(folder: str) -> List[str]:
    """Non-hidden sub-folders (symlinks followed), sorted by name bytes."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if not e.name.startswith(".") and is_dir(e)]
    except OSError as exc:
        raise unreadable_folder(folder, exc) from None
    return sorted(names, key=os.fsencode)


def _images_or_fail(folder: str, what: str, exclude: Sequence[str] = ()) -> List[str]:
    paths = list_images(folder, exclude)
    if not paths:
        raise HfrError(f"{show(folder)}: no images found ({what}; extensions: {' '.join(IMAGE_EXTS)}); "
                       f"check the path or --format")
    return paths


def _file_item(path: str, label: int, defect: str, load_mask=None) -> Item:
    return Item(path, label, defect, functools.partial(read_image, path), load_mask)


def _image_hw(path: str) -> Tuple[int, int]:
    """An image's (H, W) from its header; a broken file raises read_image's HfrError."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 - let the decoder name the problem
        return read_image(path).shape[:2]


def _mvtec_mask(image_path: str, mask_path: Optional[str]) -> np.ndarray:
    hw = _image_hw(image_path)
    if mask_path is None:  # a good image: nothing anomalous
        return np.zeros(hw, bool)
    return read_mask(mask_path, hw)


# ---------------------------------------------------------------- folder formats


def _open_mvtec(root: str) -> Tuple[List[Item], List[Item]]:
    train_dir = os.path.join(root, "train", "good")
    if not os.path.isdir(train_dir):
        raise HfrError(f"{show(root)}: no train/good folder, so not an MVTec AD category; check the path or --format")
    train = [_file_item(p, 0, "good") for p in _images_or_fail(train_dir, "MVTec AD training images")]
    test: List[Item] = []
    test_dir = os.path.join(root, "test")
    for defect in _subdirs(test_dir) if os.path.isdir(test_dir) else []:
        d = os.path.join(test_dir, defect)
        for p in list_images(d):
            mask = None
            if defect != "good":
                stem = os.path.splitext(os.path.relpath(p, d))[0]
                base = os.path.join(root, "ground_truth", defect, stem + "_mask")
                mask = next((base + e for e in IMAGE_EXTS if os.path.isfile(base + e)), None)
                if mask is None:
                    raise HfrError(f"{show(p)}: its mask {show(base)}.png is missing; add it or remove the image")
            test.append(_file_item(p, int(defect != "good"), defect, functools.partial(_mvtec_mask, p, mask)))
    return train, test


def _open_folder(root: str, test_dir: Optional[str]) -> Tuple[List[Item], List[Item]]:
    exclude = [test_dir] if test_dir else []
    train = [_file_item(p, 0, "good") for p in _images_or_fail(root, "a folder of good images", exclude)]
    if not test_dir:
        return train, []
    if not os.path.isdir(test_dir):
        raise HfrError(f"--test {show(test_dir)}: folder not found")
    if not os.path.isdir(os.path.join(test_dir, "good")):
        raise HfrError(f"--test {show(test_dir)}: no good/ subfolder; put normal test images in good/ "
                       f"and anomalous ones in one subfolder per defect type")
    try:
        with os.scandir(test_dir) as it:
            loose = sorted(e.name for e in it if not e.name.startswith(".") and e.is_file()
                           and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS)
    except OSError as exc:
        raise unreadable_folder(test_dir, exc) from None
    if loose:
        raise HfrError(f"--test {show(test_dir)}: image {show(loose[0])} lies outside good/ and the defect "
                       f"subfolders; move it into one of them")
    test = [_file_item(p, int(c != "good"), c)
            for c in _subdirs(test_dir) for p in list_images(os.path.join(test_dir, c))]
    if not test:
        raise HfrError(f"--test {show(test_dir)}: no images found in its subfolders")
    return train, test


def _class_index(value: Union[int, str], names: Sequence[str], fmt: str) -> int:
    s = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    s = {"t-shirt/top": "t-shirt", "tshirt": "t-shirt", "ankleboot": "ankle-boot"}.get(s, s)
    if s.isdigit() and int(s) < len(names):
        return int(s)
    if s in names:
        return list(names).index(s)
    raise HfrError(f"--normal-class {value!r} is not a {fmt} class; give an index 0-{len(names) - 1} "
                   f"or one of: {', '.join(names)}")


def _open_class_folders(root: str, normal_class) -> Tuple[List[Item], List[Item], str]:
    """train/<class>/*, test/<class>/*: the one-class protocol over class-named folders."""
    classes = _subdirs(os.path.join(root, "train"))
    want = str(normal_class).strip()
    if want in classes:
        name = want
    else:
        name = CIFAR_CLASSES[_class_index(normal_class, CIFAR_CLASSES, "cifar10")]
        if name not in classes:
            raise HfrError(f"--normal-class {normal_class!r}: no folder {show(os.path.join(root, 'train', name))}; "
                           f"classes here: {', '.join(show(c) for c in classes)}")
    train = [_file_item(p, 0, "good") for p in list_images(os.path.join(root, "train", name))]
    if not train:
        raise HfrError(f"{show(os.path.join(root, 'train', name))}: no image of the normal class {name!r}; "
                       f"check --normal-class and the folder")
    test_root = os.path.join(root, "test")
    test = [_file_item(p, int(c != name), "good" if c == name else c)
            for c in _subdirs(test_root) for p in list_images(os.path.join(test_root, c))]
    return train, test, name


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


def _idx_path(root: str, split: str, what: str) -> Optional[str]:
    for name in (f"{split}-{what}-ubyte", f"{split}-{what.replace('-', '.')}-ubyte"):
        for gz in (".gz", ""):
            p = os.path.join(root, name + gz)
            if os.path.isfile(p):
                return p
    return None


def read_idx(path: str, ndim: int) -> np.ndarray:
    """An IDX file (gzip or raw) of unsigned bytes with `ndim` dimensions -> uint8 array."""
    def bad(why: str) -> HfrError:
        return HfrError(f"{show(path)}: {why}; replace the file with the original download")

    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1]:
                raise bad("not an IDX file (bad magic number)")
            if head[2] != 0x08:
                raise bad(f"IDX data type 0x{head[2]:02x} is not unsigned byte (0x08)")
            if head[3] != ndim:
                raise bad(f"IDX file has {head[3]} dimensions, expected {ndim}")
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            n = math.prod(dims)
            if n > MAX_IDX_BYTES:
                raise bad(f"IDX header promises {n} bytes, more than the limit of {MAX_IDX_BYTES}")
            data = f.read(n + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise bad(f"cannot read ({exc})") from None
    except struct.error:
        raise bad("IDX header is truncated") from None
    if len(data) != n:
        raise bad(f"IDX header {tuple(dims)} needs {n} bytes of data, the file has "
                  f"{'fewer' if len(data) < n else 'more'}")
    return np.frombuffer(data, np.uint8).reshape(dims)


def _gray_to_rgb(images: np.ndarray, i: int) -> np.ndarray:
    return np.repeat(images[i][:, :, None], 3, axis=2)


def _chw_to_rgb(rows: np.ndarray, i: int) -> np.ndarray:
    return np.ascontiguousarray(rows[i].reshape(3, 32, 32).transpose(1, 2, 0))


def _check_labels(images: np.ndarray, labels: np.ndarray, where: str, n_classes: int = 10) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if len(labels) != len(images):
        raise HfrError(f"{where}: {len(images)} images but {len(labels)} labels; "
                       f"replace the files with the original download")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise HfrError(f"{where}: labels must be in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}")
    return labels


def _one_class(fmt: str, names: Sequence[str], c: int, decode, splits) -> Tuple[List[Item], List[Item]]:
    """splits: ((split name, images, labels) for train, then for test) -> (train, test) items."""
    (tr_name, tr_x, tr_y), (te_name, te_x, te_y) = splits
    train = [Item(f"{fmt}/{tr_name}:{i}", 0, "good", functools.partial(decode, tr_x, int(i)), None)
             for i in np.flatnonzero(tr_y == c)]
    if not train:
        raise HfrError(f"{fmt}: no training image of the normal class {names[c]!r}; check --normal-class and the files")
    test = [Item(f"{fmt}/{te_name}:{i}", int(y != c), "good" if y == c else names[y],
                 functools.partial(decode, te_x, i), None) for i, y in enumerate(te_y.tolist())]
    return train, test


def _open_idx(root: str, fmt: str, c: int) -> Tuple[List[Item], List[Item]]:
    splits = []
    for split in ("train", "t10k"):
        paths = [_idx_path(root, split, w) for w in ("images-idx3", "labels-idx1")]
        for p, w in zip(paths, ("images-idx3", "labels-idx1")):
            if p is None:
                raise HfrError(f"{show(root)}: {split}-{w}-ubyte[.gz] not found; "
                               f"{fmt} needs the four standard IDX files")
        x, y = read_idx(paths[0], 3), read_idx(paths[1], 1)
        splits.append((split, x, _check_labels(x, y, show(paths[1]))))
    names = FASHION_CLASSES if fmt == "fashion-mnist" else MNIST_CLASSES
    return _one_class(fmt, names, c, _gray_to_rgb, splits)


# ---------------------------------------------------------------- CIFAR-10 python batches


def _latin1_encode(text, encoding="latin1"):
    """The one use pickles make of _codecs.encode: bytes written by Python 3 at protocol < 3."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


def _numpy_global(name: str):
    try:
        from numpy._core import multiarray, numeric  # noqa: PLC0415 - numpy >= 2
    except ImportError:
        from numpy.core import multiarray, numeric  # noqa: PLC0415
    return {"_reconstruct": getattr(multiarray, "_reconstruct", None),
            "_frombuffer": getattr(numeric, "_frombuffer", None)}[name]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what CIFAR batches need: numpy array reconstruction and latin-1 bytes.
    Any other global (os.system, eval, ...) is refused before it can run."""

    def find_class(self, module, name):
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct" \
                or module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            fn = _numpy_global(name)
            if fn is not None:
                return fn
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _read_cifar_batch(path: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _RestrictedUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise HfrError(f"{show(path)}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - any failure of untrusted data is the file's fault
        raise HfrError(f"{show(path)}: not a CIFAR-10 python batch ({type(exc).__name__}: {str(exc)[:80]}); "
                       f"replace it with the original download") from None
    if isinstance(d, dict):
        d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    x = d.get("data") if isinstance(d, dict) else None
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise HfrError(f"{show(path)}: no uint8 'data' array of shape (N, 3072); not a CIFAR-10 python batch")
    return x, _check_labels(x, np.asarray(d.get("labels", [])), show(path))


def _open_cifar_batches(root: str, c: int) -> Tuple[List[Item], List[Item]]:
    for name in CIFAR_BATCHES:
        if not os.path.isfile(os.path.join(root, name)):
            raise HfrError(f"{show(root)}: {name} not found; "
                           f"the CIFAR-10 python version has data_batch_1..5 and test_batch")
    parts = [_read_cifar_batch(os.path.join(root, n)) for n in CIFAR_BATCHES]
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return _one_class("cifar10", CIFAR_CLASSES, c, _chw_to_rgb,
                      [("train",) + train, ("test",) + parts[5]])


# ---------------------------------------------------------------- detection and entry points


def _detect(root: str) -> str:
    isdir = lambda *p: os.path.isdir(os.path.join(root, *p))  # noqa: E731
    found = []
    if isdir("train", "good") and isdir("test"):
        found.append("mvtec")
    if _idx_path(root, "train", "images-idx3"):
        parts = os.path.abspath(root).lower().split(os.sep)[-2:]
        found.append("fashion-mnist" if any("fashion" in p for p in parts) else "mnist")
    if os.path.isfile(os.path.join(root, "data_batch_1")):
        found.append("cifar10")
    if isdir("train") and isdir("test"):
        tr, te = _subdirs(os.path.join(root, "train")), _subdirs(os.path.join(root, "test"))
        if len(tr) >= 2 and len(te) >= 2 and "good" not in tr + te:
            found.append("cifar10")
    found = sorted(set(found))
    if len(found) > 1:
        raise HfrError(f"{show(root)}: looks like {' and '.join(found)}; say which with --format")
    return found[0] if found else "folder"


def open_dataset(path, fmt: str = "auto", normal_class: Union[int, str, None] = None,
                 test_dir=None) -> Dataset:
    """Open a dataset folder as train (normal) and test (normal + anomalous) items."""
    root = os.fspath(path)
    if fmt not in FORMATS:
        raise HfrError(f"--format {fmt!r} is unknown; choose one of: {', '.join(FORMATS)}")
    if not os.path.exists(root):
        raise HfrError(f"{show(root)}: not found; give the dataset folder")
    if not os.path.isdir(root):
        raise HfrError(f"{show(root)}: is a file; give the folder that holds the dataset")
    fmt = _detect(root) if fmt == "auto" else fmt
    test_dir = os.fspath(test_dir) if test_dir is not None else None
    if test_dir is not None and fmt != "folder":
        raise HfrError(f"--test applies to --format folder only; {show(root)} is read as {fmt}, "
                       f"which has its own test set")
    one_class = fmt in ONE_CLASS_FORMATS
    if one_class and normal_class is None:
        names = FASHION_CLASSES if fmt == "fashion-mnist" else CIFAR_CLASSES if fmt == "cifar10" else MNIST_CLASSES
        raise HfrError(f"{fmt} needs --normal-class: an index 0-9 or one of: {', '.join(names)}")
    if not one_class and normal_class is not None:
        raise HfrError(f"--normal-class applies to mnist, fashion-mnist and cifar10; {show(root)} is read as {fmt}, "
                       f"whose normal images are its good ones: drop the option")
    name = None
    if fmt == "mvtec":
        train, test = _open_mvtec(root)
    elif fmt == "folder":
        train, test = _open_folder(root, test_dir)
    elif fmt in ("mnist", "fashion-mnist"):
        names = FASHION_CLASSES if fmt == "fashion-mnist" else MNIST_CLASSES
        c = _class_index(normal_class, names, fmt)
        train, test, name = _open_idx(root, fmt, c) + (names[c],)
    elif os.path.isfile(os.path.join(root, "data_batch_1")):
        c = _class_index(normal_class, CIFAR_CLASSES, fmt)
        train, test, name = _open_cifar_batches(root, c) + (CIFAR_CLASSES[c],)
    elif os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        train, test, name = _open_class_folders(root, normal_class)
    else:
        raise HfrError(f"{show(root)}: neither CIFAR-10 python batches (data_batch_1..5, test_batch) "
                       f"nor class folders (train/<class>, test/<class>)")
    has_masks = bool(test) and all(it.load_mask is not None for it in test)
    return Dataset(root, fmt, train, test, has_masks, name)


def load_or_skip(it: Item, skipped: List[Tuple[str, str]], warn: Callable[[str], None]) -> Optional[np.ndarray]:
    """The item's image, or None after a warning and a (key, reason) in `skipped` when it is corrupt."""
    try:
        return it.load()
    except HfrError as exc:
        skipped.append((it.key, str(exc)))
        msg = show(str(exc))
        warn(f"skipping {msg}" if msg.startswith(show(it.key)) else f"skipping {show(it.key)}: {msg}")
        return None


def load_items(items: Sequence[Item], size: int, with_masks: bool = False,
               warn: Callable[[str], None] = console.warn) -> Tuple[np.ndarray, Optional[np.ndarray], List[Item], List[Tuple[str, str]]]:
    """Load and pre-process items -> (images float32 (N, 3, S, S) in [0, 1], masks bool (N, S, S)
    or None, items kept, (key, reason) skipped). Corrupt images are skipped with a warning; a
    missing or wrong-sized mask is an error (dropping defect images would bias the metrics)."""
    if int(size) < 1:
        raise HfrError(f"image size {size} must be positive")
    x = np.empty((len(items), 3, size, size), np.float32)  # (N, 3, S, S)
    masks = np.empty((len(items), size, size), bool) if with_masks else None
    kept: List[Item] = []
    skipped: List[Tuple[str, str]] = []
    for it in items:
        if with_masks and it.load_mask is None:
            raise HfrError(f"{show(it.key)}: no ground-truth mask; this dataset has none, "
                           f"evaluate without pixel metrics")
        img = load_or_skip(it, skipped, warn)
        if img is None:
            continue
        k = len(kept)
        preprocess([img], size, out=x[k:k + 1])
        if masks is not None:
            masks[k] = resize_mask(it.load_mask(), size)
        kept.append(it)
    if items and not kept:
        raise HfrError(f"all {len(items)} images are unreadable (first: {show(skipped[0][0])}); check the dataset")
    return x[:len(kept)], None if masks is None else masks[:len(kept)], kept, skipped
