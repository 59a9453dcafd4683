"""A runner whose model runs on Triton Inference Server: `run --server URL`, `bench --server URL`.

    with open_runner("grpc://10.0.0.5:8001") as r:     # or http://host:8000; /NAME picks the model
        out = r.infer({"image": x})                    # the same contract as a local runner

Frames are pre-processed here and scored on the server through tritonclient (HTTP or gRPC). The
metadata (image size, normalisation) comes from the model's config parameters, so no local file is
needed. `last_timings` splits each round trip into `server` (Triton's own request time: queue and
compute) and `network` (transfer, (de)serialisation, client). Triton reports no per-request time, so
the split takes the proportion of the last window (0.5 s or 32 requests): Triton's mean request time
from its statistics endpoint against this client's mean round trip.

A server that is unreachable, restarting or has not loaded the model yet makes infer() raise
FrameDropped (the frame is counted in `dropped`, nothing is written); the next calls wait 0.5, 1, 2
... 4 s between attempts to reconnect, so a video file does not race through its frames while the
server is away. Any other server error is an HfrError. tritonclient is imported on first use.
"""

from __future__ import annotations

import http.client
import logging
import time
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from ..base.errors import HfrError, first_line
from .runner import Runner
from .tritonio import DEFAULT_MODEL_NAME, WIRE_DTYPE, meta_from_parameters

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
BACKOFF = (0.5, 4.0)  # first wait between reconnect attempts and its cap, seconds (doubles in between)
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0  # a queue of large batches on a busy CPU server can take seconds
STATS_EVERY = (0.5, 32)  # refresh the server's share after this many seconds or requests
# Errors that mean "not reachable or not serving right now", not "this request is wrong".
GRPC_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED", "RESOURCE_EXHAUSTED")
HTTP_TRANSIENT = ("502", "503", "504")
NOT_SERVING = ("unknown model", "is not ready", "not found", "unavailable", "is not available")


class FrameDropped(Exception):
    """The server could not score this frame (unreachable or restarting): count it, write nothing."""


class _NotReady(Exception):
    """The server answers but the model is not (yet) loaded."""


def is_server_url(target) -> bool:
    return isinstance(target, str) and target.lower().startswith(tuple(f"{s}://" for s in DEFAULT_PORTS))


def parse_url(url: str) -> Tuple[str, str, str]:
    """'grpc://host:8001/name' -> ('grpc', 'host:8001', 'name'); the port and name have defaults."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise HfrError(f"--server {url!r}: give http://HOST[:PORT][/MODEL] or grpc://HOST[:PORT][/MODEL] "
                       f"(ports {DEFAULT_PORTS['http']} and {DEFAULT_PORTS['grpc']} by default)")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise HfrError(f"--server {url!r}: the port is not a number in 1..65535") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    name = parts.path.strip("/") or DEFAULT_MODEL_NAME
    if "/" in name:
        raise HfrError(f"--server {url!r}: the path is the model name, one word (default {DEFAULT_MODEL_NAME})")
    return scheme, f"{host}:{port}", name


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, http.client.HTTPException)):  # refused, reset, timed out, closed mid-reply
        return True
    status = getattr(exc, "status", None)
    if not callable(status) or not callable(getattr(exc, "message", None)):
        return False  # not an InferenceServerException
    code = str(status() or "").replace("StatusCode.", "")
    text = str(exc.message() or "").lower()
    return code in GRPC_TRANSIENT or code in HTTP_TRANSIENT or any(s in text for s in NOT_SERVING)


class _HttpClient:
    def __init__(self, hostport: str):
        import tritonclient.http as th  # noqa: PLC0415

        self._th = th
        self._c = th.InferenceServerClient(hostport, connection_timeout=CONNECT_TIMEOUT_S,
                                           network_timeout=REQUEST_TIMEOUT_S)

    def ready(self, name: str) -> bool:
        return bool(self._c.is_model_ready(name))

    def config(self, name: str) -> Tuple[Dict[str, str], int, list, list]:
        cfg = self._c.get_model_config(name)
        params = {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
        return (params, int(cfg.get("max_batch_size", 0)), [t["name"] for t in cfg.get("input", [])],
                [t["name"] for t in cfg.get("output", [])])

    def stats(self, name: str) -> Tuple[int, int]:
        s = self._c.get_inference_statistics(name)["model_stats"][0]["inference_stats"]["success"]
        return int(s.get("count", 0)), int(s.get("ns", 0))

    def infer(self, name: str, in_name: str, x: np.ndarray, out_names) -> Dict[str, np.ndarray]:
        i = self._th.InferInput(in_name, list(x.shape), WIRE_DTYPE)
        i.set_data_from_numpy(x, binary_data=True)
        outs = [self._th.InferRequestedOutput(n, binary_data=True) for n in out_names]
        r = self._c.infer(name, [i], outputs=outs)
        return {n: r.as_numpy(n) for n in out_names}

    def close(self) -> None:
        self._c.close()


class _GrpcClient:
    def __init__(self, hostport: str):
        import tritonclient.grpc as tg  # noqa: PLC0415

        self._tg = tg
        self._c = tg.InferenceServerClient(hostport)

    def ready(self, name: str) -> bool:
        return bool(self._c.is_model_ready(name, client_timeout=CONNECT_TIMEOUT_S))

    def config(self, name: str) -> Tuple[Dict[str, str], int, list, list]:
        cfg = self._c.get_model_config(name, client_timeout=CONNECT_TIMEOUT_S).config
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        return params, int(cfg.max_batch_size), [t.name for t in cfg.input], [t.name for t in cfg.output]

    def stats(self, name: str) -> Tuple[int, int]:
        s = self._c.get_inference_statistics(name, client_timeout=CONNECT_TIMEOUT_S).model_stats[0]
        return int(s.inference_stats.success.count), int(s.inference_stats.success.ns)

    def infer(self, name: str, in_name: str, x: np.ndarray, out_names) -> Dict[str, np.ndarray]:
        i = self._tg.InferInput(in_name, list(x.shape), WIRE_DTYPE)
        i.set_data_from_numpy(x)
        outs = [self._tg.InferRequestedOutput(n) for n in out_names]
        r = self._c.infer(name, [i], outputs=outs, client_timeout=REQUEST_TIMEOUT_S)
        return {n: r.as_numpy(n) for n in out_names}

    def close(self) -> None:
        self._c.close()


def _client_class(scheme: str):
    try:
        if scheme == "http":
            import tritonclient.http  # noqa: F401, PLC0415

            return _HttpClient
        import tritonclient.grpc  # noqa: F401, PLC0415

        return _GrpcClient
    except ImportError as exc:
        raise HfrError(f"--server {scheme}://... needs tritonclient[{scheme}] ({first_line(exc, 80)}): "
                       f"pip install 'hfr-edge[triton]'") from None


class RemoteRunner(Runner):
    def __init__(self, url: str):
        self.url = url
        self.scheme, self.hostport, self.model_name = parse_url(url)
        self._client_cls = _client_class(self.scheme)
        self._client = None
        client, meta, max_batch = self._connect()
        super().__init__(f"{self.model_name}@{self.hostport}", meta)
        self._client, self.max_batch = client, max_batch
        self.backend = f"triton {self.scheme}://{self.hostport}/{self.model_name}"
        self.dropped = 0  # frames not scored because the server was away
        self.reconnects = 0
        self.stop_requested = False  # set by a signal handler: cut a reconnect wait short
        self._down_since: Optional[float] = None
        self._retry_at, self._delay = 0.0, BACKOFF[0]
        self._stats_ok, self._share = True, None  # share: server time / round trip, last window
        self._stats_base: Optional[Tuple[int, int]] = None  # Triton's (success count, ns) at the last refresh
        self._stats_at, self._win_ms, self._win_n = 0.0, 0.0, 0

    # -- connection ---------------------------------------------------------------------------
    def _connect(self):
        """A new client, checked: model ready, hfr-edge contract, metadata. Raises on any failure."""
        client = self._client_cls(self.hostport)
        try:
            if not client.ready(self.model_name):
                raise _NotReady(f"model '{self.model_name}' is not ready")
            params, max_batch, ins, outs = client.config(self.model_name)
            where = self.url
            meta = meta_from_parameters(params, where)
            if ins != [self.input_name] or not set(self.output_names) <= set(outs):
                raise HfrError(f"{where}: model I/O {ins} -> {outs} is not the hfr-edge contract (image -> "
                               f"anomaly_map, score)")
            if max_batch < 1:
                raise HfrError(f"{where}: the model's max_batch_size is {max_batch}; hfr-edge needs a batching "
                               f"model (write its repository with `hfr-edge triton`)")
            return client, meta, max_batch
        except BaseException:
            client.close()
            raise

    def _reconnect(self) -> None:
        client, meta, max_batch = self._connect()
        if meta.to_dict() != self.meta.to_dict():
            client.close()
            raise HfrError(f"{self.url} came back with another model (its metadata changed); its scores would not "
                           f"be comparable with this run's: restart the run", exit_code=1)
        old, self._client, self.max_batch = self._client, client, max_batch
        self._stats_base, self._win_ms, self._win_n = None, 0.0, 0  # the server's counters restarted
        if old is not None:
            old.close()

    def _activate(self) -> None:
        if self._client is None:
            self._reconnect()

    def _deactivate(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- inference ----------------------------------------------------------------------------
    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        if self._down_since is not None:
            self._wait_for_retry(x.shape[0])
        try:
            if self._down_since is not None:
                self._reconnect()
            t0 = time.perf_counter()
            out = self._client.infer(self.model_name, self.input_name, x, self.output_names)
        except Exception as exc:  # noqa: BLE001 - classified: transient -> dropped, else the user's error
            if not (_transient(exc) or isinstance(exc, _NotReady)):
                if isinstance(exc, HfrError):
                    raise
                raise HfrError(f"{self.url}: the server refused the request ({first_line(exc, 200)})",
                               exit_code=1) from None
            raise self._went_down(exc, x.shape[0]) from None
        total = (time.perf_counter() - t0) * 1e3
        if self._down_since is not None:
            log.warning("%s: reconnected after %.1f s; %d frame(s) dropped so far", self.url,
                        time.monotonic() - self._down_since, self.dropped)
            self._down_since, self._delay = None, BACKOFF[0]
        self.last_timings = self._split(total)
        out["score"] = out["score"].reshape(-1)  # [N, 1] on the wire (Triton's dims), [N] in the contract
        return out

    def _went_down(self, exc: BaseException, n: int) -> FrameDropped:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since, self._delay = now, BACKOFF[0]
        else:
            self._delay = min(self._delay * 2, BACKOFF[1])
        self.reconnects += 1
        self._retry_at = now + self._delay
        self.dropped += n
        log.warning("%s: %s; frame dropped, retrying in %g s", self.url, first_line(exc, 160), self._delay)
        return FrameDropped(first_line(exc, 160))

    def _wait_for_retry(self, n: int) -> None:
        """Sleep until the next attempt in short slices; a stop request ends the wait (frame dropped)."""
        while not self.stop_requested:
            left = self._retry_at - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))
        self.dropped += n
        raise FrameDropped("stop requested while the server was away")

    def _split(self, total: float) -> Dict[str, float]:
        """This call's round trip split in the proportion of the last window: Triton's mean request time
        (its statistics, all clients) against this client's mean round trip over the same requests."""
        self._win_ms += total
        self._win_n += 1
        now = time.monotonic()
        due = self._share is None or now - self._stats_at >= STATS_EVERY[0] or self._win_n >= STATS_EVERY[1]
        if self._stats_ok and due:
            self._refresh_share(now)
        if self._share is None:
            return {"round_trip": total}
        return {"server": total * self._share, "network": total * (1.0 - self._share)}

    def _refresh_share(self, now: float) -> None:
        try:
            count, ns = self._client.stats(self.model_name)
        except Exception as exc:  # noqa: BLE001 - statistics are optional (a guarded endpoint says 403)
            if not _transient(exc):
                self._stats_ok = False
                log.info("%s: no inference statistics (%s); timing the round trip only", self.url, first_line(exc, 120))
            return
        base, self._stats_base = self._stats_base, (count, ns)
        if base is not None and count > base[0] and ns >= base[1] and self._win_ms > 0:
            server_ms = (ns - base[1]) / (count - base[0]) / 1e6
            self._share = min(1.0, server_ms / (self._win_ms / self._win_n))
        self._stats_at, self._win_ms, self._win_n = now, 0.0, 0


def open_remote(url: str, provider: str = "auto") -> RemoteRunner:
    """The runner for `--server URL`, connected and checked; an unreachable server is an HfrError here
    (only a server lost during a run is waited for)."""
    if provider != "auto":
        raise HfrError(f"--provider {provider} applies to local models; a server picks its own provider")
    try:
        runner = RemoteRunner(url)
    except (HfrError, FrameDropped):
        raise
    except Exception as exc:  # noqa: BLE001 - tritonclient, socket and gRPC errors
        _, hostport, name = parse_url(url)
        hint = ("start it with `hfr-edge serve MODEL`" if _transient(exc) or isinstance(exc, _NotReady)
                else "check the URL and the model name")
        raise HfrError(f"--server {url}: cannot use model '{name}' at {hostport} ({first_line(exc, 160)}); {hint}",
                       exit_code=2) from None
    return runner.activate()
