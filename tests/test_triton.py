"""The Triton pieces that need no server: `hfr-edge triton`'s repository parsed with Triton's own
model-config protobuf and matched to the graph, server URLs, the Python check behind `serve`, and
`run`'s handling of frames a server could not score."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from hfr_edge.base.artifact import ArtifactMeta, load_meta, write_meta
from hfr_edge.base.errors import HfrError
from hfr_edge.serve.repository import RepoConfig, write_repository


def _parse(config: Path):
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())


def _graph_io(path):
    """(name, elem type, shape) of the graph's inputs and outputs, dims as ints or the symbol."""
    onnx = pytest.importorskip("onnx")
    g = onnx.load(str(path)).graph

    def io(vs):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim])
                for v in vs]

    return io(g.input), io(g.output)


def test_repository_parses_and_matches_the_graph(tmp_path, tiny_model_onnx):
    mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from onnx import TensorProto

    from hfr_edge.runtime.tritonio import meta_from_parameters

    config = write_repository(tiny_model_onnx, tmp_path / "repo")
    assert config == tmp_path / "repo" / "hfr_edge" / "config.pbtxt"
    c = _parse(config)
    ins, outs = _graph_io(tiny_model_onnx)
    assert c.name == "hfr_edge" and c.backend == "onnxruntime" and c.max_batch_size == 8
    assert list(c.version_policy.specific.versions) == [1]
    assert (tmp_path / "repo" / "hfr_edge" / "1" / "model.onnx").read_bytes() == Path(tiny_model_onnx).read_bytes()
    # every graph tensor, same name and dtype; Triton's dims are the graph's without the batch axis
    assert [(t.name, t.data_type) for t in c.input] == [(n, mc.TYPE_FP32) for n, e, _ in ins if e == TensorProto.FLOAT]
    assert [(t.name, t.data_type) for t in c.output] == [(n, mc.TYPE_FP32) for n, e, _ in outs if e == TensorProto.FLOAT]
    for t, (_, _, shape) in zip(list(c.input) + list(c.output), ins + outs):
        assert isinstance(shape[0], str)  # a dynamic batch in the graph: Triton owns that axis
        if len(shape) == 1:  # score [N]: one value per image, dims [1] reshaped to the graph's []
            assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
        else:
            assert list(t.dims) == shape[1:] and not t.HasField("reshape")
    assert list(c.dynamic_batching.preferred_batch_size) == [4, 8]
    assert c.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [(g.kind, g.count) for g in c.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 1)]
    (acc,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
    params = {k: v.string_value for k, v in c.parameters.items()}
    meta = load_meta(tiny_model_onnx)
    assert meta_from_parameters(params, "config").to_dict() == meta.to_dict()
    assert params["image_size"] == "64" and params["threshold"] == "0.5"
    assert float(params["norm_threshold"]) == meta.norm["threshold"] and float(params["norm_low"]) == meta.norm["low"]


def test_repository_cpu_unbatched_and_rewritten(tmp_path, toy_onnx):
    mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")

    repo = tmp_path / "repo"
    write_repository(toy_onnx, repo, RepoConfig(name="line3", version=2, max_batch=16, preferred=(2, 16),
                                                queue_delay_us=500, kind="cpu", instances=2))
    c = _parse(repo / "line3" / "config.pbtxt")
    assert c.name == "line3" and c.max_batch_size == 16 and list(c.version_policy.specific.versions) == [2]
    assert list(c.dynamic_batching.preferred_batch_size) == [2, 16]
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in c.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    assert not c.HasField("optimization")  # no GPU, no TensorRT accelerator
    write_repository(toy_onnx, repo, RepoConfig(name="line3", version=2, dynamic_batching=False, kind="cpu"))
    c = _parse(repo / "line3" / "config.pbtxt")
    assert not c.HasField("dynamic_batching") and c.max_batch_size == 8
    assert sorted(p.name for p in (repo / "line3").iterdir()) == ["2", "config.pbtxt"]  # no temp files left


def test_repository_of_an_engine_uses_the_tensorrt_backend(tmp_path, toy_onnx):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan bytes: a TensorRT engine is opaque to the writer")
    src = load_meta(toy_onnx)
    write_meta(engine, ArtifactMeta("engine", "fp16", src.image_size, src.model, src.norm,
                                    {"batch_profile": [1, 4, 16], "fingerprint": {"tensorrt": "10.3.0"}}))
    c = _parse(write_repository(engine, tmp_path / "repo"))
    assert c.backend == "tensorrt" and c.max_batch_size == 16
    assert list(c.dynamic_batching.preferred_batch_size) == [4, 16]  # the profile's opt and max
    assert not c.HasField("optimization")
    assert (tmp_path / "repo" / "hfr_edge" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    with pytest.raises(HfrError, match="exceeds model.engine's batch profile maximum 16"):
        write_repository(engine, tmp_path / "r2", RepoConfig(max_batch=32))
    with pytest.raises(HfrError, match="runs on GPU instances only"):
        write_repository(engine, tmp_path / "r2", RepoConfig(kind="cpu"))


@pytest.mark.parametrize("cfg, msg", [
    (RepoConfig(name="a/b"), "--name 'a/b'"),
    (RepoConfig(kind="tpu"), "--kind 'tpu' must be gpu or cpu"),
    (RepoConfig(preferred=(4, 9)), r"--preferred 4,9: sizes must lie in 1..8"),
    (RepoConfig(max_batch=0), "--max-batch 0 must be at least 1"),
    (RepoConfig(instances=0), "--instances 0 must be at least 1"),
])
def test_repository_refuses_bad_settings(tmp_path, toy_onnx, cfg, msg):
    with pytest.raises(HfrError, match=msg):
        write_repository(toy_onnx, tmp_path / "repo", cfg)
    assert not (tmp_path / "repo").exists()


def test_triton_cli_one_line_errors(tmp_path, toy_onnx, capsys):
    from hfr_edge.cli import main

    (tmp_path / "file").write_text("x")
    for args, msg in ((["triton", str(toy_onnx), "-o", str(tmp_path / "file")], "is a file; give a folder"),
                      (["triton", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "r")], "file not found"),
                      (["triton", str(toy_onnx), "-o", str(tmp_path / "r"), "--preferred", "4;8"], "separated by commas")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:
        main(["triton", str(toy_onnx), "-o", str(tmp_path / "ok"), "--kind", "cpu"])
    assert e.value.code == 0
    assert "tritonserver --model-repository=/models" in capsys.readouterr().out


def test_server_urls():
    from hfr_edge.runtime.remote import is_server_url, parse_url

    assert parse_url("http://127.0.0.1") == ("http", "127.0.0.1:8000", "hfr_edge")
    assert parse_url("grpc://localhost:9001/line3") == ("grpc", "localhost:9001", "line3")
    assert parse_url("GRPC://[::1]:8001/") == ("grpc", "[::1]:8001", "hfr_edge")
    assert is_server_url("http://x") and is_server_url("grpc://x") and not is_server_url("model.onnx")
    assert not is_server_url(Path("http://x"))  # a Path is a file, whatever its name
    for bad, msg in (("https://h", "give http://HOST"), ("http://h:99999", "port is not a number"),
                     ("grpc://h/a/b", "the model name, one word")):
        with pytest.raises(HfrError, match=msg):
            parse_url(bad)


def test_unreachable_server_is_a_one_line_error(capsys):
    pytest.importorskip("tritonclient.http")
    from hfr_edge.cli import main
    from serving import free_ports

    port = free_ports(1)[0]  # nothing listens there
    with pytest.raises(SystemExit) as e:
        main(["bench", "--server", f"http://127.0.0.1:{port}", "-n", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot use model 'hfr_edge' at 127.0.0.1:{port}" in err and "hfr-edge serve MODEL" in err
    with pytest.raises(SystemExit):
        main(["run", "model.onnx", "--server", f"http://127.0.0.1:{port}", "--source", "x", "--headless"])
    assert "give MODEL or --server, not both" in capsys.readouterr().err


def test_python_check_names_the_fix(tmp_path, monkeypatch, capsys):
    import sysconfig

    from hfr_edge.cli import main
    from hfr_edge.serve import server

    lib = tmp_path / "sys" / "libpython3.11.so.1.0"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    monkeypatch.setattr(server, "_loader_finds", lambda soname: lib)
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var", lambda k: {"LIBDIR": str(lib.parent),
                                                                "INSTSONAME": lib.name}.get(k, real(k)))
    assert server.python_problem() is None  # the loader's libpython is this Python's own
    other = tmp_path / "pyenv"
    other.mkdir()
    monkeypatch.setattr(sysconfig, "get_config_var", lambda k: {"LIBDIR": str(other),
                                                                "INSTSONAME": lib.name}.get(k, real(k)))
    problem = server.python_problem()
    assert f"loads {lib}, another Python build" in problem and "-m venv .venv" in problem
    monkeypatch.setattr(server, "_loader_finds", lambda soname: None)
    assert "apt-get install libpython" in server.python_problem()
    with pytest.raises(SystemExit) as e:
        main(["serve", "model.onnx"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "libpython" in err


def test_serve_refuses_bad_ports(capsys):
    from hfr_edge.cli import main

    for args, msg in ((["--http-port", "8001"], "must differ"), (["--grpc-port", "0"], "--grpc-port 0 must be a port"),
                      (["--name", "a b"], "--name 'a b'")):
        with pytest.raises(SystemExit) as e:
            main(["serve", "model.onnx", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err, err


def test_run_counts_frames_a_server_could_not_score(tmp_path, toy_onnx, monkeypatch):
    """The run loop with a runner that loses frames 3..5 (as RemoteRunner does while its server is away)."""
    pytest.importorskip("cv2")
    from hfr_edge.runtime.onnxrt import OrtRunner
    from hfr_edge.runtime.remote import FrameDropped
    from hfr_edge.runtime.run import run

    class Flaky(OrtRunner):
        calls = 0

        def _infer(self, x):
            Flaky.calls += 1
            if 4 <= Flaky.calls <= 6:
                self.dropped += 1
                raise FrameDropped("server away")
            self.last_timings = {"server": 1.0, "network": 0.5}
            return super()._infer(x)

    def opener(path, provider="auto"):
        return Flaky(path, provider="cpu").activate()
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for i in range(10):
        Image.fromarray(np.full((40, 40, 3), 20 * i, np.uint8)).save(folder / f"{i:02d}.png")
    summary = run(str(toy_onnx), source=str(folder), headless=True, jsonl=str(tmp_path / "r.jsonl"),
                  summary=str(tmp_path / "s.json"), log=open(os.devnull, "w"), opener=opener)
    frames = [json.loads(line)["frame"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert frames == [0, 1, 2, 6, 7, 8, 9]
    assert summary["frames"] == 7 and summary["dropped"] == 3
    assert summary["inference_split_ms"] == {"server": 1.0, "network": 0.5}
    assert json.loads((tmp_path / "s.json").read_text())["dropped"] == 3
