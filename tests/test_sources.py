"""Frame sources: folders, globs, video files, camera errors, and the live reader's latest-frame
and reconnect logic driven by fake captures (no real camera needed)."""

from __future__ import annotations

import logging
import queue
import re
import sys
import threading
import time

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.runtime import sources
from hfr_edge.runtime.sources import csi_pipeline, has_gstreamer, open_source

cv2 = pytest.importorskip("cv2")

from toy import decode_video  # noqa: E402


def _png(path, value, hw=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full(hw + (3,), value, np.uint8)
    img[..., 0] = value // 2  # R differs from B: a BGR/RGB swap would show
    cv2.imwrite(str(path), img[:, :, ::-1])
    return img


def _write_video(path, n=8, hw=(48, 64)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (hw[1], hw[0]))
    for i in range(n):
        img = np.zeros(hw + (3,), np.uint8)
        img[:, : 8 * (i + 1)] = (20 * i, 100, 255 - 20 * i)
        w.write(img)
    w.release()
    return path


def test_folder_sorted_recursive_and_corrupt_skipped(tmp_path, caplog):
    want = {"a/img2.png": 10, "a/img10.png": 20, "b/c/x.png": 30, "z.png": 40}
    for rel, v in want.items():
        _png(tmp_path / rel, v)
    (tmp_path / "a" / "img5.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING), open_source(None, str(tmp_path)) as src:
        frames = list(src)
    names = [f.name[len(str(tmp_path)) + 1:] for f in frames]
    assert names == ["a/img2.png", "a/img10.png", "b/c/x.png", "z.png"]  # natural order, corrupt one gone
    assert src.skipped == 1 and src.dropped == 0 and not src.live
    assert "img5.png" in caplog.text
    for f in frames:
        v = want[f.name[len(str(tmp_path)) + 1:]]
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (20, 24, 3)
        assert (f.rgb[0, 0] == (v // 2, v, v)).all()  # RGB order
    assert [f.index for f in frames] == [0, 2, 3, 4]  # position in the sorted list (img5 was 1)


def test_glob_and_single_image(tmp_path):
    for i in (3, 1, 2):
        _png(tmp_path / f"f{i}.png", 10 * i)
    _png(tmp_path / "other.jpg", 99)
    with open_source(None, str(tmp_path / "f*.png")) as src:
        assert [f.name.rsplit("/", 1)[1] for f in src] == ["f1.png", "f2.png", "f3.png"]
    with open_source(None, str(tmp_path / "f2.png")) as src:
        assert len(list(src)) == 1
    with pytest.raises(HfrError, match="no image files match"):
        open_source(None, str(tmp_path / "*.bmp"))


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfrError, match="holds no images"):
        open_source(None, str(tmp_path / "empty"))
    with pytest.raises(HfrError, match="nope.mp4: no such file"):
        open_source(None, str(tmp_path / "nope.mp4"))


def test_video_file_frame_for_frame(tmp_path):
    path = _write_video(tmp_path / "v.mp4", n=8)
    ref = decode_video(path)
    assert len(ref) == 8
    with open_source(None, str(path)) as src:
        frames = list(src)
        assert src.fps == pytest.approx(10)
        assert "8 frames" in src.describe()
    assert [f.index for f in frames] == list(range(8))
    for f, r in zip(frames, ref):
        assert f.rgb.shape == (48, 64, 3) and np.array_equal(f.rgb, r)


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(HfrError, match="broken.mp4"):
        open_source(None, str(bad))


def test_exactly_one_of_camera_and_source(tmp_path):
    with pytest.raises(HfrError, match="exactly one of --camera"):
        open_source(None, None)
    with pytest.raises(HfrError, match="exactly one of --camera"):
        open_source("0", str(tmp_path))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device check is Linux-only")
def test_missing_camera_lists_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEV_DIR", str(tmp_path))
    with pytest.raises(HfrError, match=r"video3 does not exist; video devices seen: none found"):
        open_source("3", None)
    for n in (10, 0, 2):
        (tmp_path / f"video{n}").touch()
    msg = f"video5 does not exist; video devices seen: {tmp_path}/video0, {tmp_path}/video2, {tmp_path}/video10"
    with pytest.raises(HfrError, match=re.escape(msg)):
        open_source("/dev/video5", None)
    with pytest.raises(HfrError, match="give a V4L2 index"):
        open_source("front-door", None)


def test_csi_needs_gstreamer():
    p = csi_pipeline(1, 1920, 1080, 60)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=60/1")
    assert p.endswith("videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
    if has_gstreamer(cv2):
        pytest.skip("this cv2 has GStreamer; the refusal cannot be shown")
    with pytest.raises(HfrError, match="GStreamer.*JetPack"):
        open_source("csi://0", None)
    with pytest.raises(HfrError, match="csi://N"):
        open_source("csi://left", None)


def test_pipeline_needs_appsink_and_url_password_hidden():
    with pytest.raises(HfrError, match="must end in appsink"):
        open_source(None, "videotestsrc ! videoconvert ! autovideosink")

    class Closed:
        def isOpened(self):
            return False

        def release(self):
            pass

    with pytest.raises(HfrError, match=r"rtsp://admin:\*\*\*@cam.local:554/s1 could not be opened") as e:
        open_source(None, "rtsp://admin:hunter2@cam.local:554/s1", capture_factory=lambda t, api: Closed())
    assert "hunter2" not in str(e.value)


# -- live sources with fake captures -----------------------------------------------------------
class QueueCap:
    """read() returns the frames the test puts in its queue; None in the queue means failure."""

    def __init__(self, q=None, opened=True):
        self.q = q if q is not None else queue.Queue()
        self.opened, self.released = opened, False

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        return True

    def read(self):
        item = self.q.get(timeout=10)
        return (False, None) if item is None else (True, item)

    def release(self):
        self.released = True


def _img(v):
    img = np.zeros((6, 8, 3), np.uint8)
    img[..., 0] = v  # B
    return img


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def fake_dev(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEV_DIR", str(tmp_path))
    (tmp_path / "video0").touch()


def test_latest_frame_wins_and_drops_are_counted(fake_dev):
    cap = QueueCap()
    with open_source("0", None, capture_factory=lambda t, api: cap) as src:
        assert src.live
        for v in range(5):
            cap.q.put(_img(v))
        _wait(lambda: src.dropped == 4)  # five frames arrived, none consumed: four overwritten
        f = next(src)
        assert f.index == 4 and f.rgb[0, 0, 2] == 4  # the newest, converted BGR -> RGB
        cap.q.put(_img(9))
        f = next(src)
        assert f.index == 5 and f.rgb[0, 0, 2] == 9 and src.dropped == 4
        src.stop_requested = True
        with pytest.raises(StopIteration):
            next(src)


def _delays(caplog):
    return [float(x) for x in re.findall(r"reconnecting in ([0-9.]+) s", caplog.text)]


def test_reconnects_after_stall(fake_dev, caplog):
    stalled = QueueCap()  # gives two frames, then its read blocks
    fresh = QueueCap()
    caps = iter([stalled, fresh])
    for v in (1, 2):
        stalled.q.put(_img(v))
    with caplog.at_level(logging.WARNING), \
            open_source("0", None, stall_timeout=0.3, backoff=(0.05, 0.4), capture_factory=lambda t, a: next(caps)) as src:
        seen = [next(src).rgb[0, 0, 2]]
        fresh.q.put(_img(7))
        while seen[-1] != 7:
            seen.append(next(src).rgb[0, 0, 2])
        assert src.reconnects == 1
    assert "no frame for 0.3 s; reconnecting in 0.05 s (attempt 1)" in caplog.text
    stalled.q.put(None)  # let the abandoned read return: its reader releases the capture
    _wait(lambda: stalled.released)


def test_reconnects_after_errors_with_exponential_backoff(fake_dev, caplog):
    first, good = QueueCap(), QueueCap()
    first.q.put(None)  # the first read fails
    caps = iter([first, QueueCap(opened=False), QueueCap(opened=False), QueueCap(opened=False), good])
    good.q.put(_img(3))
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING), \
            open_source("0", None, backoff=(0.05, 0.15), capture_factory=lambda t, a: next(caps)) as src:
        f = next(src)
        assert f.rgb[0, 0, 2] == 3
    assert time.monotonic() - t0 >= 0.05 + 0.1 + 0.15 + 0.15 - 0.02
    assert _delays(caplog) == [0.05, 0.1, 0.15, 0.15]  # doubling, capped
    assert "read failed" in caplog.text and "could not be reopened" in caplog.text
    assert first.released


def test_gives_up_after_max_reconnects(fake_dev):
    first = QueueCap()
    first.q.put(None)
    caps = iter([first] + [QueueCap(opened=False)] * 5)
    with open_source("0", None, max_reconnects=2, backoff=(0.01, 0.02),
                     capture_factory=lambda t, a: next(caps)) as src:
        with pytest.raises(HfrError, match="gave up after 2 reconnect attempts"):
            next(src)


def test_close_stops_a_waiting_reader(fake_dev):
    cap = QueueCap()
    src = open_source("0", None, capture_factory=lambda t, a: cap)
    t = threading.Timer(0.2, src.close)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(StopIteration):
        next(src)
    assert time.monotonic() - t0 < 2
    cap.q.put(None)
    _wait(lambda: cap.released)
