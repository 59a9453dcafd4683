"""Dataset readers on tiny generated files of every format, their errors, and the real data."""

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hfr_edge.data import FASHION_CLASSES, list_images, load_items, open_dataset
from hfr_edge.base.errors import HfrError

from conftest import DATASETS  # noqa: E402


def png(path, hw=(8, 8), value=128, mode="RGB"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = hw + (3,) if mode == "RGB" else hw
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)
    return path


def make_mvtec(root, mask_hw=(8, 8)):
    for i in range(3):
        png(root / "train" / "good" / f"{i:03d}.png")
    png(root / "test" / "good" / "000.png")
    for d in ("crack", "hole"):
        png(root / "test" / d / "000.png", value=200)
        m = np.zeros(mask_hw, np.uint8)
        m[: mask_hw[0] // 2] = 255
        (root / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
        Image.fromarray(m, "L").save(root / "ground_truth" / d / "000_mask.png")
    return root


def write_idx(path, arr, gz):
    arr = np.asarray(arr, np.uint8)
    data = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(data)


def make_idx(root, gz=True, n_train=20, n_test=10):
    sfx = ".gz" if gz else ""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 6, 5))
        images[:, 0, 0] = labels  # so a test can check image i belongs to label i
        write_idx(root / f"{split}-images-idx3-ubyte{sfx}", images, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{sfx}", labels, gz)
    return root


def make_cifar_batches(root, protocol=2, n=10):
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(n)]
        data = np.zeros((n, 3072), np.uint8)
        data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 10, 20, 30  # R, G, B planes
        data[:, 0] = labels
        (root / name).write_bytes(pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data},
                                               protocol=protocol))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane"] * 10}))
    return root


# ---------------------------------------------------------------- MVTec AD


def test_mvtec_with_masks(tmp_path):
    ds = open_dataset(make_mvtec(tmp_path / "cat"))
    assert (ds.format, ds.has_masks, ds.normal_class) == ("mvtec", True, None)
    assert [Path(i.key).name for i in ds.train] == ["000.png", "001.png", "002.png"]
    assert [(i.defect, i.label) for i in ds.test] == [("crack", 1), ("good", 0), ("hole", 1)]
    x, m, kept, skipped = load_items(ds.test, 16, with_masks=True)
    assert x.shape == (3, 3, 16, 16) and x.dtype == np.float32 and skipped == [] and len(kept) == 3
    assert np.allclose(x[0], 200 / 255) and np.allclose(x[1], 128 / 255)
    assert m.shape == (3, 16, 16) and m.dtype == bool
    assert m[0, :8].all() and not m[0, 8:].any() and not m[1].any()


def test_mvtec_missing_mask(tmp_path):
    root = make_mvtec(tmp_path / "cat")
    (root / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(HfrError, match=r"hole.000_mask.*missing"):
        open_dataset(root, "mvtec")


def test_mvtec_mask_of_wrong_size(tmp_path):
    ds = open_dataset(make_mvtec(tmp_path / "cat", mask_hw=(4, 8)))
    with pytest.raises(HfrError, match="mask is 8x4 but its image is 8x8"):
        load_items(ds.test, 16, with_masks=True)


def test_mvtec_rejects_normal_class_and_test_dir(tmp_path):
    root = make_mvtec(tmp_path / "cat")
    with pytest.raises(HfrError, match="--normal-class applies to"):
        open_dataset(root, normal_class=3)
    with pytest.raises(HfrError, match="--test applies to --format folder"):
        open_dataset(root, test_dir=root / "test")


# ---------------------------------------------------------------- plain folders


def test_folder_without_test_dir(tmp_path):
    png(tmp_path / "b.PNG")
    png(tmp_path / "a" / "z.jpg")
    png(tmp_path / "a" / "deeper" / "y.bmp")
    png(tmp_path / ".hidden.png")
    png(tmp_path / ".cache" / "x.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = open_dataset(tmp_path)
    assert ds.format == "folder" and ds.test == [] and not ds.has_masks
    rel = [os.path.relpath(i.key, tmp_path) for i in ds.train]
    assert rel == [os.path.join("a", "deeper", "y.bmp"), os.path.join("a", "z.jpg"), "b.PNG"]
    assert ds.train[0].load().shape == (8, 8, 3) and ds.train[0].load_mask is None


def test_folder_with_test_dir_inside_root(tmp_path):
    png(tmp_path / "g1.png")
    png(tmp_path / "g2.png")
    png(tmp_path / "eval" / "good" / "n.png")
    png(tmp_path / "eval" / "scratch" / "s.png")
    ds = open_dataset(tmp_path, "folder", test_dir=tmp_path / "eval")
    assert len(ds.train) == 2  # the test folder is not trained on
    assert [(i.defect, i.label) for i in ds.test] == [("good", 0), ("scratch", 1)]


def test_folder_test_dir_errors(tmp_path):
    png(tmp_path / "train" / "g.png")
    png(tmp_path / "t" / "scratch" / "s.png")
    with pytest.raises(HfrError, match="no good/ subfolder"):
        open_dataset(tmp_path / "train", test_dir=tmp_path / "t")
    with pytest.raises(HfrError, match="folder not found"):
        open_dataset(tmp_path / "train", test_dir=tmp_path / "nope")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    ds = open_dataset(make_idx(tmp_path / "mnist", gz=gz), normal_class="3")
    assert (ds.format, ds.normal_class, ds.has_masks) == ("mnist", "3", False)
    assert [i.key for i in ds.train] == ["mnist/train:3", "mnist/train:13"]
    assert [i.label for i in ds.test] == [int(k != 3) for k in range(10)]
    assert [i.defect for i in ds.test][2:5] == ["2", "good", "4"]
    img = ds.test[7].load()
    assert img.shape == (6, 5, 3) and img.dtype == np.uint8 and (img[0, 0] == 7).all()


def test_fashion_mnist_by_class_name(tmp_path):
    ds = open_dataset(make_idx(tmp_path / "fashion"), normal_class="Ankle boot")
    assert (ds.format, ds.normal_class) == ("fashion-mnist", "ankle-boot")
    assert [i.key for i in ds.train] == ["fashion-mnist/train:9", "fashion-mnist/train:19"]
    assert [i.defect for i in ds.test] == list(FASHION_CLASSES[:9]) + ["good"]
    # the folder name decides auto-detection; --format overrides it
    assert open_dataset(tmp_path / "fashion", "mnist", normal_class=1).format == "mnist"


def test_one_class_errors(tmp_path):
    root = make_idx(tmp_path / "mnist", n_train=5)
    with pytest.raises(HfrError, match="mnist needs --normal-class.*0, 1, 2"):
        open_dataset(root)
    with pytest.raises(HfrError, match="'trouser' is not a mnist class"):
        open_dataset(root, normal_class="trouser")
    with pytest.raises(HfrError, match="no training image of the normal class '7'"):
        open_dataset(root, normal_class=7)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-3], "needs 600 bytes of data, the file has fewer"),
    (lambda b: b + b"\0", "the file has more"),
    (lambda b: b"\1\2" + b[2:], "bad magic"),
    (lambda b: b[:6], "header is truncated"),
])
def test_idx_damage(tmp_path, damage, message):
    root = make_idx(tmp_path / "mnist", gz=False)
    p = root / "train-images-idx3-ubyte"
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(HfrError, match=message):
        open_dataset(root, normal_class=0)


def test_idx_label_count_mismatch(tmp_path):
    root = make_idx(tmp_path / "mnist")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(9), True)
    with pytest.raises(HfrError, match="10 images but 9 labels"):
        open_dataset(root, normal_class=0)


# ---------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_cifar_python_batches(tmp_path, protocol):
    ds = open_dataset(make_cifar_batches(tmp_path / "cifar-10-batches-py", protocol), normal_class="cat")
    assert (ds.format, ds.normal_class) == ("cifar10", "cat")
    assert [i.key for i in ds.train] == [f"cifar10/train:{3 + 10 * b}" for b in range(5)]
    assert [i.defect for i in ds.test][2:5] == ["bird", "good", "deer"]
    img = ds.test[5].load()
    assert img.shape == (32, 32, 3) and tuple(img[0, 1]) == (10, 20, 30) and img[0, 0, 0] == 5
    assert open_dataset(tmp_path / "cifar-10-batches-py", "cifar10", normal_class=0).normal_class == "airplane"


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    root = make_cifar_batches(tmp_path / "c")
    (root / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(HfrError, match=r"data_batch_1: not a CIFAR-10 python batch.*system is not allowed"):
        open_dataset(root, normal_class=0)
    assert not marker.exists()


def test_cifar_class_folders(tmp_path):
    for split in ("train", "test"):
        for c in ("cat", "dog", "ship"):
            png(tmp_path / split / c / f"{c}0.png")
    png(tmp_path / "test" / "dog" / "dog1.png")
    ds = open_dataset(tmp_path, normal_class=3)  # index 3 is "cat"
    assert (ds.format, ds.normal_class, len(ds.train)) == ("cifar10", "cat", 1)
    assert [(i.defect, i.label) for i in ds.test] == [("good", 0), ("dog", 1), ("dog", 1), ("ship", 1)]
    with pytest.raises(HfrError, match="no folder .*truck.*classes here: cat, dog, ship"):
        open_dataset(tmp_path, normal_class="truck")


# ---------------------------------------------------------------- detection and bad input


def test_ambiguous_folder_asks_for_format(tmp_path):
    make_idx(make_mvtec(tmp_path / "both"))
    with pytest.raises(HfrError, match="looks like mnist and mvtec; say which with --format"):
        open_dataset(tmp_path / "both")
    assert open_dataset(tmp_path / "both", "mvtec").format == "mvtec"


def test_bad_paths(tmp_path):
    with pytest.raises(HfrError, match="nope: not found"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(HfrError, match="is a file"):
        open_dataset(png(tmp_path / "a.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfrError, match="empty: no images found"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(HfrError, match="--format 'coco' is unknown"):
        open_dataset(tmp_path, "coco")


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    png(tmp_path / "c.png", value=50)
    warnings = []
    x, masks, kept, skipped = load_items(open_dataset(tmp_path).train, 4, warn=warnings.append)
    assert x.shape == (2, 3, 4, 4) and masks is None
    assert np.allclose(x[1], 50 / 255) and [Path(i.key).name for i in kept] == ["a.png", "c.png"]
    assert [Path(k).name for k, _ in skipped] == ["b.png"]
    assert len(warnings) == 1 and warnings[0].startswith(f"skipping {tmp_path / 'b.png'}: ")
    (tmp_path / "a.png").write_bytes(b"junk")
    (tmp_path / "c.png").write_bytes(b"")
    with pytest.raises(HfrError, match="all 3 images are unreadable"):
        load_items(open_dataset(tmp_path).train, 4, warn=warnings.append)


def test_symlink_loop_ends(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    try:
        os.symlink(tmp_path / "imgs", tmp_path / "imgs" / "loop")
        os.symlink(tmp_path / "imgs" / "self", tmp_path / "imgs" / "self")
    except (OSError, NotImplementedError):
        pytest.skip("the filesystem refuses symlinks")
    assert [Path(p).name for p in list_images(tmp_path / "imgs")] == ["a.png"]


def test_non_utf8_file_name(tmp_path):
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    try:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(open(bad, "wb"), "PNG")
    except OSError:
        pytest.skip("the filesystem refuses non-UTF-8 names")
    Path(os.fsdecode(bad)[:-4] + "_broken.png").write_bytes(b"junk")
    png(tmp_path / "z.png")
    ds = open_dataset(tmp_path)
    name = os.fsdecode(bad)
    assert [i.key for i in ds.train] == [name, name[:-4] + "_broken.png", str(tmp_path / "z.png")]
    warnings = []
    x, _, kept, skipped = load_items(ds.train, 4, warn=warnings.append)
    assert len(kept) == 2 and x.shape == (2, 3, 4, 4) and len(skipped) == 1
    assert "caf\ufffd_broken.png" in warnings[0] and warnings[0].encode("utf-8")  # printable


def test_import_does_not_pull_torch():
    code = "import sys, hfr_edge.data; assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- real data


def test_real_mnist_class_0():
    if not (DATASETS / "mnist").is_dir():
        pytest.skip(f"MNIST not found at {DATASETS / 'mnist'}")
    ds = open_dataset(DATASETS / "mnist", normal_class=0)
    assert (len(ds.train), len(ds.test), sum(i.label == 0 for i in ds.test)) == (5923, 10000, 980)
    x, _, _, _ = load_items(ds.test[:4], 32)
    assert x.shape == (4, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0


def test_real_bottle(bottle_dir):
    ds = open_dataset(bottle_dir)
    assert (ds.format, len(ds.train), len(ds.test), ds.has_masks) == ("mvtec", 209, 83, True)
    defects = [i for i in ds.test if i.label]
    assert len(defects) == 63
    _, m, _, _ = load_items(defects[:2] + [i for i in ds.test if not i.label][:1], 32, with_masks=True)
    assert m[0].any() and m[1].any() and not m[2].any()
