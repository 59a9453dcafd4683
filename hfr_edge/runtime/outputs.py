"""Where `hfr-edge run` writes, checked before the first frame is captured: a run that would score
an hour of video and then fail to write its results must fail at once instead, with one line.

Files (--save, --jsonl, --summary): not a folder, in an existing folder this process can create
files in (tried with a real file: permissions alone lie for root and for read-only mounts), not the
source being read, not another output; a video with an extension (it picks the container). The
anomaly folder (--save-anomalies): a folder, created when missing if its parent exists. With several
sources, each gets its own video and anomaly folder.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..base.errors import HfrError


@dataclass(frozen=True)
class Outputs:
    """The checked paths; per-source lists hold one entry per source (None: not asked for)."""

    videos: List[Optional[Path]]
    anomaly_dirs: List[Optional[Path]]
    jsonl: Optional[Path]
    summary: Optional[Path]
    created: List[Path] = field(default_factory=list)  # folders made here: removed again if a failed run leaves them empty


def per_source(path: Optional[str], n: int, folder: bool = False) -> List[Optional[Path]]:
    """One path per source: the path itself for one source; out.mp4 -> out_0.mp4, out_1.mp4 ... and
    DIR -> DIR/0, DIR/1 ... for several."""
    if path is None:
        return [None] * n
    p = Path(path)
    if n == 1:
        return [p]
    return [p / str(i) if folder else p.with_name(f"{p.stem}_{i}{p.suffix}") for i in range(n)]


def _parent(p: Path) -> Path:
    return p.parent if str(p.parent) else Path(".")


def _probe(folder: Path, option: str, path: Path) -> None:
    """Create and remove a file in `folder`: the only test that holds for root and read-only mounts."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hfr-edge-probe-", dir=folder)
    except OSError as exc:
        raise HfrError(f"{option} {path}: cannot create files in folder {folder} ({exc.strerror or exc}); "
                       f"choose a writable folder") from None
    os.close(fd)
    os.unlink(tmp)


def check_file(path: Path, option: str, example: str) -> Path:
    if path.is_dir():
        raise HfrError(f"{option} {path}: is a folder; give a file name such as {path / example}")
    parent = _parent(path)
    if not parent.exists():
        raise HfrError(f"{option} {path}: folder {parent} does not exist; create it or choose another path")
    if not parent.is_dir():
        raise HfrError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
    _probe(parent, option, path)
    return path


def check_folder(path: Path, option: str, created: List[Path]) -> Path:
    if path.exists() and not path.is_dir():
        raise HfrError(f"{option} {path}: is a file; give a folder for the PNGs")
    if not path.exists():
        parent = _parent(path)
        if not parent.is_dir():
            raise HfrError(f"{option} {path}: folder {parent} does not exist; create it or choose another path")
        try:
            path.mkdir()
        except OSError as exc:
            raise HfrError(f"{option} {path}: cannot create the folder ({exc.strerror or exc}); "
                           f"choose a writable folder") from None
        created.append(path)
    _probe(path, option, path)
    return path


def check_outputs(n_sources: int, save: Optional[str] = None, jsonl: Optional[str] = None,
                  summary: Optional[str] = None, save_anomalies: Optional[str] = None,
                  inputs: Sequence[str] = ()) -> Outputs:
    """Check every output of a run over `n_sources` sources (`inputs`: the files read, never to be written)."""
    created: List[Path] = []
    if save and not Path(save).suffix and not Path(save).is_dir():  # the extension picks the container
        raise HfrError(f"--save {save}: no file extension, so no video container; give a name such as "
                       f"{save}.mp4 (PNGs of the anomalous frames: --save-anomalies {save})")
    videos = [check_file(p, "--save", "out.mp4") if p else None for p in per_source(save, n_sources)]
    jl = check_file(Path(jsonl), "--jsonl", "run.jsonl") if jsonl else None
    sm = check_file(Path(summary), "--json", "summary.json") if summary else None
    seen: Dict[Path, str] = {}
    for p in inputs:
        if p and os.path.isfile(p):
            seen[Path(p).resolve()] = f"--source {p}"
    for option, p in [("--save", v) for v in videos] + [("--jsonl", jl), ("--json", sm)]:
        if p is None:
            continue
        other = seen.get(p.resolve())
        if other is not None:
            raise HfrError(f"{option} {p}: is also {other}; give each output its own file")
        seen[p.resolve()] = f"{option} {p}"
    if save_anomalies and n_sources > 1:  # DIR holds one folder per source
        check_folder(Path(save_anomalies), "--save-anomalies", created)
    dirs = [check_folder(p, "--save-anomalies", created) if p else None
            for p in per_source(save_anomalies, n_sources, folder=True)]
    return Outputs(videos, dirs, jl, sm, created)


def remove_if_empty(folders: Sequence[Path]) -> None:
    """After a failed run: drop the folders this run made and never wrote into."""
    for d in reversed(list(folders)):
        try:
            d.rmdir()  # only succeeds when empty
        except OSError:
            pass
