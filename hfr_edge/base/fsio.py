"""Files: atomic writes (an artifact appears under its final name complete, or not at all), JSON
reading with one-line errors, and content hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import HfrError


def _describe_os_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EFBIG:
        return f"cannot write {path}: no space left (disk full or file size limit); free space or choose another output path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied; choose a writable output path"
    if exc.errno == errno.ENOENT:
        return f"cannot write {path}: folder {path.parent} does not exist; create it or choose another output path"
    return f"cannot write {path}: {exc.strerror or exc}; choose another output path"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    On any failure (exception, Ctrl-C) the temporary file is removed and `path` keeps its
    previous content. A SIGKILL can leave a `.<name>.tmp-*` file behind, never a partial `path`.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HfrError(f"cannot write {path}: folder {parent} does not exist; create it or choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=parent)
        os.close(fd)
    except OSError as exc:
        raise HfrError(_describe_os_error(path, exc)) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        _unlink_quiet(tmp_path)
        raise HfrError(_describe_os_error(path, exc)) from None
    except BaseException:
        _unlink_quiet(tmp_path)
        raise


def _unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise HfrError(_describe_os_error(Path(path), exc)) from None


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HfrError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HfrError(f"cannot read {what} {path}: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HfrError(f"{what} {path} is not valid JSON (line {exc.lineno}): regenerate it") from None
    if not isinstance(obj, dict):
        raise HfrError(f"{what} {path} must hold a JSON object; regenerate it")
    return obj


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_or_bytes(path: str | os.PathLike):
    """What a library that cannot take a non-UTF-8 file name (ONNX Runtime) should open: the path,
    or the file's bytes when the path is not valid UTF-8 (hfr-edge graphs keep no external data)."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise HfrError(f"{path}: cannot read ({exc.strerror or exc})") from None
