"""The TensorRT build recipe per generation: 8.5/8.6 (JetPack 5), 10.3 (JetPack 6), 10.8, 11.x; pure,
so it is tested without TensorRT, and checked against the real bindings' members (trt_api.py)."""

import pytest
from trt_api import API

from hfr_edge.build.plan import REMOVED_IN_11, api_for_version, make_plan, parse_version
from hfr_edge.base.errors import HfrError

GRAPHS = [("fp32", None), ("fp16", None), ("int8", None), ("fp32", "fp16"), ("fp16", "fp16"), ("int8", "int8")]


def test_parse_version():
    assert parse_version("8.5.2.2") == (8, 5)
    assert parse_version("10.3.0") == (10, 3)
    assert parse_version("11.0.0.12") == (11, 0)
    with pytest.raises(HfrError, match="MAJOR.MINOR"):
        parse_version("ten")


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1"])
def test_trt8_explicit_batch_and_precision_flags(version):
    p = make_plan(version, graph_precision="int8")
    assert p.network_flags == ("EXPLICIT_BATCH",) and p.explicit_batch_flag and not p.strongly_typed
    assert p.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS") and p.precision == "int8"
    assert p.workspace_api == "memory_pool_limit" and p.tail_fp32
    assert make_plan(version, graph_precision="fp16").builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    fp16_flag = make_plan(version, graph_precision="fp32", requested="fp16")
    assert fp16_flag.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and fp16_flag.precision == "fp16"
    fp32 = make_plan(version, graph_precision="fp32")
    assert fp32.builder_flags == () and fp32.precision == "fp32" and fp32.network_flags == ("EXPLICIT_BATCH",)
    assert not fp32.tail_fp32  # nothing to pin: no reduced precision enabled


def test_max_workspace_size_only_before_memory_pools():
    assert make_plan("8.2.5", graph_precision="fp32").workspace_api == "max_workspace_size"
    assert make_plan("8.4.3", graph_precision="fp32").workspace_api == "memory_pool_limit"


@pytest.mark.parametrize("version", ["10.3.0", "10.8.0.43"])
@pytest.mark.parametrize("graph,requested", [g for g in GRAPHS if g != ("fp32", "fp16")])
def test_trt10_strongly_typed_when_the_graph_carries_precision(version, graph, requested):
    p = make_plan(version, graph_precision=graph, requested=requested)
    assert p.strongly_typed and p.network_flags == ("STRONGLY_TYPED",)
    assert p.builder_flags == () and not p.explicit_batch_flag  # EXPLICIT_BATCH is ignored on 10.x
    assert p.precision == (requested or graph) and p.workspace_api == "memory_pool_limit"


def test_trt10_fp32_graph_as_fp16_falls_back_to_the_fp16_flag():
    p = make_plan("10.3.0", graph_precision="fp32", requested="fp16")
    assert not p.strongly_typed and p.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert p.network_flags == () and p.tail_fp32


def test_trt10_without_strongly_typed_bindings_uses_flags():
    p = make_plan("10.3.0", {"strongly_typed": False}, "int8")
    assert p.builder_flags == ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS") and p.network_flags == ()


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1"])
@pytest.mark.parametrize("graph,requested", [g for g in GRAPHS if g != ("fp32", "fp16")])
def test_trt11_strongly_typed_by_default_and_no_removed_api(version, graph, requested):
    p = make_plan(version, graph_precision=graph, requested=requested)
    assert p.strongly_typed and p.builder_flags == () and p.network_flags == () and not p.explicit_batch_flag
    assert p.precision == (requested or graph)
    used = set(p.builder_flags) | set(p.network_flags) | {p.workspace_api}
    assert not used & REMOVED_IN_11
    text = " ".join(p.notes)
    assert not any(name in text.split() for name in REMOVED_IN_11)
    assert "BuilderFlag" not in text and "calibrator" not in text.lower()


def test_trt11_refuses_to_lower_an_fp32_graph_with_flags():
    with pytest.raises(HfrError, match="convert it first"):
        make_plan("11.0.0", graph_precision="fp32", requested="fp16")


def test_api_for_version():
    assert api_for_version("8.5.2")["explicit_batch_flag"] and not api_for_version("8.5.2")["strongly_typed"]
    assert not api_for_version("11.0")["precision_flags"]


@pytest.mark.parametrize("graph,requested,match", [("fp32", "int8", "calibrated first"), ("fp16", "int8", "calibrated"),
                                                   ("int8", "fp16", "does not apply")])
def test_incompatible_requests(graph, requested, match):
    for version in ("8.5.2", "10.3.0", "11.0.0"):
        with pytest.raises(HfrError, match=match):
            make_plan(version, graph_precision=graph, requested=requested)


def test_bad_inputs():
    with pytest.raises(HfrError, match="too old"):
        make_plan("7.1.3", graph_precision="fp32")
    with pytest.raises(HfrError, match="graph precision"):
        make_plan("10.3", graph_precision="bf16")
    with pytest.raises(HfrError, match="requested precision"):
        make_plan("10.3", graph_precision="fp32", requested="fp8")


@pytest.mark.parametrize("version", list(API))
@pytest.mark.parametrize("graph,requested", GRAPHS)
def test_every_plan_uses_only_what_the_real_bindings_have(version, graph, requested):
    api = API[version]
    try:
        p = make_plan(version, graph_precision=graph, requested=requested)
    except HfrError:
        assert version.startswith("11") and (graph, requested) == ("fp32", "fp16")
        return
    assert set(p.network_flags) <= set(api["NetworkDefinitionCreationFlag"])
    assert set(p.builder_flags) <= set(api["BuilderFlag"])
    assert {"memory_pool_limit": "set_memory_pool_limit"}.get(p.workspace_api, p.workspace_api) in api["IBuilderConfig"]
    if p.tail_fp32:  # pinning the tail needs per-layer precision
        assert {"precision", "set_output_type"} <= set(api["ILayer"])


def test_removed_in_11_is_what_the_bindings_say():
    kinds = ("BuilderFlag", "NetworkDefinitionCreationFlag", "IBuilderConfig")  # what a plan names
    earlier = {m for v in ("8.5.3", "10.3.0") for k in kinds for m in API[v][k]}
    eleven = {m for k in kinds for m in API["11.0.0"][k]}
    assert not REMOVED_IN_11 & eleven
    assert REMOVED_IN_11 - {"FP4"} <= earlier  # FP4 came with 10.8 and went with 11
    assert "DIRECT_IO" in API["11.0.0"]["BuilderFlag"]  # deprecated in 11, not removed
    assert "EXPLICIT_BATCH" not in API["11.0.0"]["NetworkDefinitionCreationFlag"]
    assert "max_workspace_size" not in API["10.3.0"]["IBuilderConfig"]
    assert {"precision", "set_output_type"} & set(API["11.0.0"]["ILayer"]) == set()


def test_opset_limit_for_tensorrt_8():
    for version in ("8.5.2.2", "8.6.1"):
        make_plan(version, graph_precision="fp32", graph_opset=17)
        with pytest.raises(HfrError, match=r"opset 18, but TensorRT 8\.\d's ONNX parser reads opset <= 17"):
            make_plan(version, graph_precision="fp32", graph_opset=18)
    for version in ("10.3.0", "11.0.0"):
        assert make_plan(version, graph_precision="fp16", graph_opset=20).precision == "fp16"
