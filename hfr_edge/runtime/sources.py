"""Frame sources for `hfr-edge run`: cameras (V4L2, CSI), video files, image folders or globs,
network streams and raw GStreamer pipelines, all as one iterator of RGB `Frame`s.

Files and folders are read in order in the caller's thread and never drop a frame. Live sources
read in their own thread and keep only the newest frame (overwritten ones count in `dropped`);
one that stalls or fails reconnects with exponential backoff. No torch; cv2 imported lazily.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..base import console
from ..base.errors import HfrError
from ..base.images import IMAGE_EXTS, cv2_module, list_images, read_image, to_rgb_uint8

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DEV_DIR = "/dev"  # where V4L2 devices live (tests point this elsewhere)
BACKOFF = (0.5, 8.0)  # first reconnect delay and its cap, seconds (doubles in between)
CSI_PIPELINE = ("nvarguscamerasrc sensor-id={n} ! video/x-raw(memory:NVMM),width={w},height={h},framerate={fps}/1"
                " ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR"
                " ! appsink drop=1 max-buffers=1")

# capture_factory(target, api) -> an object with cv2.VideoCapture's isOpened/read/release/get/set
CaptureFactory = Callable[[Any, Optional[int]], Any]


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (live: capture sequence number, so gaps are dropped frames)
    time: float  # wall-clock capture time, seconds since the epoch
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    name: str  # image path, video path, camera or stream name


class Source:
    """An iterator of Frames with close(); `live`, `dropped`, `skipped`, `fps` (nominal or None)."""

    live = False

    def __init__(self, name: str):
        self.name = name
        self.fps: Optional[float] = None
        self.dropped = 0  # live: frames overwritten before being consumed
        self.skipped = 0  # folders: corrupt images skipped
        self.stop_requested = False  # set by a signal handler: a plain attribute, no locks

    def __iter__(self):
        return self

    def __next__(self) -> Frame:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 3 and bgr.shape[2] in (3, 4) and bgr.dtype == np.uint8:
        cv2 = cv2_module()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB if bgr.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    return to_rgb_uint8(bgr, "captured frame")


class ImageFiles(Source):
    """Image files in the given order; corrupt ones are skipped, counted and warned about."""

    def __init__(self, name: str, paths: List[str]):
        super().__init__(name)
        self._paths = paths
        self._i = 0

    def __next__(self) -> Frame:
        while self._i < len(self._paths) and not self.stop_requested:
            i, p = self._i, self._paths[self._i]
            self._i += 1
            try:
                rgb = read_image(p)
            except HfrError as exc:  # its message names the file
                self.skipped += 1
                console.warn(f"skipped {exc}")
                continue
            return Frame(i, time.time(), rgb, p)
        raise StopIteration

    def describe(self) -> str:
        return f"{self.name} ({len(self._paths)} images)"


class VideoFile(Source):
    """A video file decoded frame by frame; ends cleanly at its end."""

    def __init__(self, path: str, capture_factory: CaptureFactory):
        super().__init__(path)
        cv2 = cv2_module()
        cap = capture_factory(path, None)
        if not cap.isOpened():
            raise HfrError(f"{path}: cannot open it as a video (unknown format or corrupt); give a video file, "
                           f"an image folder or glob, a URL or --camera")
        ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            raise HfrError(f"{path}: no frame could be decoded; the video is empty or corrupt")
        self._cap, self._pending, self._i = cap, bgr, 0
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or None
        self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._hw = bgr.shape[:2]

    def __next__(self) -> Frame:
        if self._pending is not None:
            bgr, self._pending = self._pending, None
        elif self._cap is None or self.stop_requested:
            raise StopIteration
        else:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                self.close()
                raise StopIteration
        self._i += 1
        return Frame(self._i - 1, time.time(), _bgr_to_rgb(bgr), self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> str:
        fps = f" @ {self.fps:g} fps" if self.fps else ""
        return f"video {self.name} ({self._count} frames, {self._hw[1]}x{self._hw[0]}{fps})"


class _Conn:
    """One connection of a live source: its reader thread reports here."""

    def __init__(self):
        self.done = threading.Event()  # supervisor -> reader: stop reading
        self.wake = threading.Event()  # reader (failed) or close() -> supervisor
        self.reason = "stopped"
        self.last = time.monotonic()  # time of the last frame
        self.frames = 0


class LiveSource(Source):
    """A camera or stream read in its own thread with latest-frame semantics.

    `open_capture()` makes a new capture (used to reconnect); `first` is the capture already
    opened. A connection that errors or gives no frame for `stall_timeout` s is abandoned (its
    reader releases it when its read returns) and reopened after 0.5, 1, 2, 4, 8, 8 ... s; the
    delay resets once a connection delivers a frame. After `max_reconnects` attempts without a
    frame (None: never give up) the next read raises HfrError.
    """

    live = True

    def __init__(self, name: str, open_capture: Callable[[], Any], first: Any, *, stall_timeout: float = 5.0,
                 max_reconnects: Optional[int] = None, backoff: Tuple[float, float] = BACKOFF,
                 fps: Optional[float] = None, what: str = "stream"):
        super().__init__(name)
        self.fps, self._what = fps, what
        self._open_capture, self._stall, self._max, self._backoff = open_capture, stall_timeout, max_reconnects, backoff
        self.reconnects = 0  # total reconnect attempts
        self._cond = threading.Condition()
        self._latest = None  # (seq, time, rgb) not yet consumed
        self._seq = 0
        self._error: Optional[str] = None
        self._closed = False
        self._stop = threading.Event()
        self._conn: Optional[_Conn] = None
        self._thread = threading.Thread(target=self._supervise, args=(first,), name=f"hfr-source {name}", daemon=True)
        self._thread.start()

    def __next__(self) -> Frame:
        with self._cond:
            while self._latest is None:
                if self.stop_requested or self._closed:
                    raise StopIteration
                if self._error:
                    raise HfrError(self._error, exit_code=1)
                self._cond.wait(0.25)  # short slices: a signal handler only sets stop_requested
            seq, t, rgb = self._latest
            self._latest = None
        return Frame(seq, t, rgb, self.name)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def describe(self) -> str:
        return f"{self._what} {self.name} (live)"

    # -- reader side ---------------------------------------------------------------------------
    def _publish(self, bgr: np.ndarray) -> None:
        t = time.time()
        rgb = _bgr_to_rgb(bgr)  # here, off the caller's thread (cv2 releases the GIL)
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = (self._seq, t, rgb)
            self._seq += 1
            self._cond.notify()

    def _read_loop(self, cap, conn: _Conn) -> None:
        try:
            while not conn.done.is_set():
                ok, bgr = cap.read()
                if conn.done.is_set():
                    break
                if not ok or bgr is None:
                    conn.reason = "read failed (stream ended or device error)"
                    break
                conn.last = time.monotonic()
                conn.frames += 1
                self._publish(bgr)
        except Exception as exc:  # noqa: BLE001 - any capture error means reconnect
            conn.reason = f"read error ({type(exc).__name__}: {exc})"
        finally:
            conn.wake.set()
            try:
                cap.release()
            except Exception:  # noqa: BLE001 - releasing a broken capture may fail too
                pass

    def _pump(self, cap) -> Tuple[str, bool]:
        """Read from `cap` until it fails, stalls or the source closes: (reason, got a frame)."""
        conn = self._conn = _Conn()
        reader = threading.Thread(target=self._read_loop, args=(cap, conn), name=f"hfr-reader {self.name}", daemon=True)
        reader.start()
        reason = "stopped"
        while not self._stop.is_set():
            remaining = conn.last + self._stall - time.monotonic()
            if remaining <= 0:
                reason = f"no frame for {self._stall:g} s"
                break
            if conn.wake.wait(remaining):
                reason = conn.reason
                break
        conn.done.set()
        if not self._stop.is_set():  # let it release the device before reopening; a hung read is abandoned
            reader.join(timeout=1.0)
        return reason, conn.frames > 0

    def _try_open(self):
        try:
            cap = self._open_capture()
            if cap.isOpened():
                return cap
            cap.release()
        except Exception as exc:  # noqa: BLE001 - reported as the reason of the next attempt
            console.warn(f"{self.name}: open failed ({type(exc).__name__}: {exc})")
        return None

    def _supervise(self, cap) -> None:
        delay, failures = self._backoff[0], 0
        while True:
            if cap is not None:
                reason, got_frame = self._pump(cap)
                if got_frame:
                    delay, failures = self._backoff[0], 0
            else:
                reason = "could not be reopened"
            if self._stop.is_set():
                return
            failures += 1
            if self._max is not None and failures > self._max:
                self._error = f"{self.name}: {reason}; gave up after {self._max} reconnect attempts"
                with self._cond:
                    self._cond.notify_all()
                return
            self.reconnects += 1
            console.warn(f"{self.name}: {reason}; reconnecting in {delay:g} s (attempt {failures})")
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._backoff[1])
            cap = self._try_open()


# -- opening ------------------------------------------------------------------------------------
def _cv2_capture(target, api: Optional[int]):
    cv2 = cv2_module()
    return cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)


def has_gstreamer(cv2) -> bool:
    """Whether this cv2 was built with GStreamer (JetPack's is; PyPI wheels are not)."""
    m = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(m) and m.group(1).upper() != "NO"


def _require_gstreamer(cv2, what: str) -> None:
    if not has_gstreamer(cv2):
        raise HfrError(f"{what} needs OpenCV with GStreamer, and this cv2 ({cv2.__file__}) has none; on a Jetson use "
                       f"JetPack's system OpenCV (pip uninstall opencv-python-headless; venv with --system-site-packages)")


def csi_pipeline(sensor: int, width: int, height: int, fps: int) -> str:
    return CSI_PIPELINE.format(n=sensor, w=width, h=height, fps=fps)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def video_devices() -> List[str]:
    return sorted(glob.glob(os.path.join(DEV_DIR, "video*")), key=_natural_key)


def _redact(url: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://user:***@host/x (names and logs never show passwords)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _live(name: str, open_capture: Callable[[], Any], fail: str, what: str, fps: Optional[float] = None,
          **kw) -> LiveSource:
    cap = open_capture()
    if not cap.isOpened():
        cap.release()
        raise HfrError(fail)
    if fps is None:  # the device's or stream's own rate, when it gives a plausible one
        try:
            fps = float(cap.get(cv2_module().CAP_PROP_FPS))
        except Exception:  # noqa: BLE001 - a capture that cannot say
            fps = 0.0
        fps = fps if 1.0 <= fps <= 240.0 else None
    return LiveSource(name, open_capture, cap, what=what, fps=fps, **kw)


def _open_camera(spec: str, width: int, height: int, fps: int, factory: CaptureFactory, **kw) -> LiveSource:
    cv2 = cv2_module()
    s = spec.strip()
    if s.startswith("csi://"):
        n = s[len("csi://"):]
        if not n.isdigit():
            raise HfrError(f"--camera {spec!r}: a CSI camera is csi://N with N the sensor id, e.g. csi://0")
        if min(width, height, fps) < 1:
            raise HfrError(f"--width/--height/--fps {width}x{height}@{fps} must all be positive")
        _require_gstreamer(cv2, f"CSI camera {s}")
        pipeline = csi_pipeline(int(n), width, height, fps)
        return _live(s, lambda: factory(pipeline, cv2.CAP_GSTREAMER),
                     f"CSI camera {s} could not be opened; check the sensor cable and that nvargus-daemon runs "
                     f"(sudo systemctl restart nvargus-daemon), and that {width}x{height}@{fps} is a sensor mode",
                     "CSI camera", fps=float(fps), **kw)
    m = re.fullmatch(r"(?:v4l2://)?(?:/dev/video)?(\d+)", s)
    if not m:
        raise HfrError(f"--camera {spec!r}: give a V4L2 index (0), a device (/dev/video0) or a CSI camera (csi://0)")
    index = int(m.group(1))
    dev = os.path.join(DEV_DIR, f"video{index}")
    if sys.platform.startswith("linux") and not os.path.exists(dev):
        seen = ", ".join(video_devices()) or "none found"
        raise HfrError(f"camera {dev} does not exist; video devices seen: {seen} "
                       f"(a CSI camera is --camera csi://0)")
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else None

    def open_v4l2():
        cap = factory(index, api)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
        return cap

    return _live(dev, open_v4l2, f"camera {dev} exists but could not be opened: busy in another program, "
                                 f"or no permission (add the user to the 'video' group)", "camera", **kw)


def _image_list(pattern: str) -> List[str]:
    files = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTS)]
    return sorted(files, key=_natural_key)


def _folder_images(folder: str) -> List[str]:
    """Image files under `folder` as datasets list them (recursive, hidden names skipped, symlink
    loops ended), in natural order (frame_2 before frame_10)."""
    return sorted(list_images(folder), key=_natural_key)


def open_source(camera: Optional[str], source: Optional[str], *, width: int = 1280, height: int = 720, fps: int = 30,
                stall_timeout: float = 5.0, max_reconnects: Optional[int] = None,
                backoff: Tuple[float, float] = BACKOFF, capture_factory: Optional[CaptureFactory] = None) -> Source:
    """Open exactly one of --camera / --source (see `hfr-edge run --help` for the forms)."""
    if (camera is None) == (source is None):
        raise HfrError("give exactly one of --camera (0, /dev/video0, csi://0) and --source "
                       "(video file, image folder or glob, rtsp:// or http:// URL, GStreamer pipeline)")
    if stall_timeout <= 0:
        raise HfrError(f"stall timeout {stall_timeout} must be positive")
    factory = capture_factory or _cv2_capture
    live_kw = dict(stall_timeout=stall_timeout, max_reconnects=max_reconnects, backoff=backoff)
    if camera is not None:
        return _open_camera(camera, width, height, fps, factory, **live_kw)
    s = source.strip()
    if s.startswith("csi://") or s.startswith("/dev/video") or s.startswith("v4l2://"):
        return _open_camera(s, width, height, fps, factory, **live_kw)
    if " ! " in s:
        if "appsink" not in s:
            raise HfrError(f"--source pipeline {s!r} must end in appsink (e.g. '... ! videoconvert ! appsink drop=1')")
        cv2 = cv2_module()
        _require_gstreamer(cv2, "a GStreamer pipeline source")
        return _live("gstreamer pipeline", lambda: factory(s, cv2.CAP_GSTREAMER),
                     f"GStreamer pipeline could not be started: {s}; test it with gst-launch-1.0", "pipeline", **live_kw)
    if s.lower().startswith(URL_SCHEMES):
        name = _redact(s)
        return _live(name, lambda: factory(s, None), f"stream {name} could not be opened; check the address, "
                                                     f"credentials and network", "stream", **live_kw)
    p = Path(s)
    if p.is_dir():
        files = _folder_images(s)
        if not files:
            raise HfrError(f"{s}: folder holds no images ({', '.join(IMAGE_EXTS)})")
        return ImageFiles(f"folder {s}", files)
    if p.is_file():
        if s.lower().endswith(IMAGE_EXTS):
            return ImageFiles(f"image {s}", [s])
        return VideoFile(s, factory)
    if re.search(r"[*?[]", s):
        files = _image_list(s)
        if not files:
            raise HfrError(f"--source {s!r}: no image files match this pattern")
        return ImageFiles(f"glob {s}", files)
    raise HfrError(f"--source {s}: no such file or folder (give a video file, an image folder or glob, "
                   f"an rtsp:// or http:// URL, or a GStreamer pipeline)")
