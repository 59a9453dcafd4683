"""`hfr-edge serve` as a subprocess on the loopback, for the serve tests and benchmarks/serve.py:
free ports, start, wait for the model to be ready, stop (SIGTERM) or kill (SIGKILL to its group)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def serve_skip_reason():
    """Why `hfr-edge serve` cannot run under this interpreter (None: it can)."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None or importlib.util.find_spec("tritonclient") is None:
        return "nvidia-pytriton / tritonclient not installed (pip install 'hfr-edge[triton]')"
    from hfr_edge.serve.server import python_problem

    return python_problem()


def free_ports(n: int = 3) -> list:
    """n ports the kernel has free on 127.0.0.1 now (bound together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """One `hfr-edge serve` process group on 127.0.0.1."""

    def __init__(self, model, ports, log_path, *args, name: str = "hfr_edge"):
        self.model, self.ports, self.args, self.name = str(model), list(ports), [str(a) for a in args], name
        self.log_path = Path(log_path)  # a file, not a pipe: a full pipe would block the server
        self.proc = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def grpc(self) -> str:
        return f"grpc://127.0.0.1:{self.ports[1]}"

    def start(self, timeout: float = 120.0) -> "Server":
        http, grpc, metrics = self.ports
        cmd = [sys.executable, "-m", "hfr_edge", "serve", self.model, "--address", "127.0.0.1", "--http-port",
               str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--name", self.name, *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})
        url = f"{self.http}/v2/models/{self.name}/ready"  # /v2/health/ready is 200 before PyTriton loads the model
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hfr-edge serve exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"hfr-edge serve not ready after {timeout:g} s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def group_gone(self, timeout: float = 15.0) -> bool:
        """True once no process of the group is left (tritonserver, its stub, multiprocessing's tracker)."""
        deadline = time.monotonic() + timeout
        while self.group_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def kill(self) -> None:
        """A crash: SIGKILL to the whole group (hfr-edge, tritonserver, the Python-backend stub)."""
        if self.proc is not None and self.group_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM to hfr-edge alone (as a supervisor sends it); its exit code. Killed if it hangs."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
