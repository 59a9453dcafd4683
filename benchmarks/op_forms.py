"""Equivalent ONNX forms of the two costliest non-encoder ops of a part's graph, timed alone on ONNX
Runtime (CPU, the suite's session settings: no thread spinning; interleaved round by round):

- the stride-4 statistics' whitening product: 4096 positions, each its own (24, 72) matrix (three
  Gaussians side by side), a batched MatMul today (model.FeatureGaussian._nearest_local); against it
  the lower-triangular whitening split into 2 / 3 / 4 blocks of rows (25-38 % fewer bytes, one
  MatMul per block), the transposed product, an Einsum, a broadcast Mul + ReduceSum, a grouped 1x1 Conv;
- the decoder's x2 transposed convolution (kernel 4, stride 2, padding 1) against the same as a 2x2
  convolution with four times the channels on the padded grid, four slices and a DepthToSpace.

Every form is checked against the first of its group (max abs difference). Usage:
    python benchmarks/op_forms.py [--rounds 30] [--name op_forms.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import ort_session, table, write_json

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--rounds", type=int, default=30)
ap.add_argument("--name", default="op_forms.json")
args = ap.parse_args()

from onnx import TensorProto, helper as h, numpy_helper as nh  # noqa: E402

rng = np.random.default_rng(0)
P, C, K = 4096, 24, 3  # positions at stride 4 (256 px), channels, Gaussians
I64 = lambda *v: np.array(v, np.int64)  # noqa: E731


def session(nodes, inits, shape):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                     [nh.from_array(a, n) for n, a in inits.items()])
    return ort_session(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString())


def product_forms(b: int) -> dict:
    w = np.tril(rng.standard_normal((P, C, K * C)).astype(np.float32))
    f = {"batched MatMul (today)": session([h.make_node("MatMul", ["x", "W"], ["y"])], {"W": w}, [P, b, C])}
    for nb in (2, 3, 4):  # output block k needs input rows k*s.. only (lower-triangular whitening)
        s, nodes, inits, outs = C // nb, [], {"e": I64(C), "ax": I64(2)}, []
        for k in range(nb):
            inits[f"W{k}"] = np.ascontiguousarray(w[:, k * s:, :][:, :, :K * s])  # shape only; values need not match
            if k:
                inits[f"s{k}"] = I64(k * s)
                nodes.append(h.make_node("Slice", ["x", f"s{k}", "e", "ax"], [f"x{k}"]))
            nodes.append(h.make_node("MatMul", ["x" if k == 0 else f"x{k}", f"W{k}"], [f"z{k}"]))
            outs.append(f"z{k}")
        nodes.append(h.make_node("Concat", outs, ["y"], axis=2))
        f[f"{nb} triangular blocks"] = session(nodes, inits, [P, b, C])
    f["transposed, W^T x^T"] = session([h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
                                        h.make_node("MatMul", ["Wt", "t"], ["y"])],
                                       {"Wt": np.ascontiguousarray(w.transpose(0, 2, 1))}, [P, b, C])
    if b == 1:  # the forms below flatten the batch away
        f["Einsum"] = session([h.make_node("Einsum", ["x", "W"], ["y"], equation="pbi,pij->pbj")], {"W": w}, [P, b, C])
        f["Mul + ReduceSum"] = session([h.make_node("Reshape", ["x", "sh"], ["r"]), h.make_node("Mul", ["r", "W"], ["m"]),
                                        h.make_node("ReduceSum", ["m", "ax"], ["y"], keepdims=0)],
                                       {"W": w, "sh": I64(P, C, 1), "ax": I64(1)}, [P, b, C])
        f["grouped 1x1 Conv"] = session([h.make_node("Reshape", ["x", "sh"], ["r"]),
                                         h.make_node("Conv", ["r", "Wg"], ["y"], group=P)],
                                        {"Wg": np.ascontiguousarray(w.transpose(0, 2, 1)).reshape(P * K * C, C, 1, 1),
                                         "sh": I64(1, P * C, 1, 1)}, [P, b, C])
    return f


# ConvTranspose(k 4, s 2, p 1): output row 2i + a reads input rows i - 1, i (a = 0: kernel rows 3, 1) or
# i, i + 1 (a = 1: kernel rows 2, 0); a 2x2 convolution padded by 1 sees rows r - 1, r at its output row r
KROW = {0: {0: 3, 1: 1}, 1: {1: 2, 2: 0}}


def upsampling_forms(cin: int, cout: int, n: int, b: int) -> dict:
    wt = (rng.standard_normal((cin, cout, 4, 4)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    f = {"ConvTranspose (today)": session(
        [h.make_node("ConvTranspose", ["x", "W", "B"], ["t"], kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1]),
         h.make_node("Relu", ["t"], ["y"])], {"W": wt, "B": bias}, [b, cin, n, n])}
    wc = np.zeros((4, cout, cin, 2, 2), np.float32)
    for a in (0, 1):
        for c in (0, 1):
            for d in (0, 1):
                for e in (0, 1):
                    wc[a * 2 + c, :, :, d, e] = wt[:, :, KROW[a][a + d], KROW[c][c + e]].T
    nodes = [h.make_node("Conv", ["x", "Wc", "Bc"], ["c"], kernel_shape=[2, 2], pads=[1, 1, 1, 1])]
    inits = {"Wc": wc.reshape(4 * cout, cin, 2, 2), "Bc": np.tile(bias, 4), "ax": I64(1, 2, 3)}
    for a in (0, 1):
        for c in (0, 1):
            k = a * 2 + c
            inits[f"s{k}"], inits[f"e{k}"] = I64(k * cout, a, c), I64((k + 1) * cout, a + n, c + n)
            nodes.append(h.make_node("Slice", ["c", f"s{k}", f"e{k}", "ax"], [f"p{k}"]))
    nodes += [h.make_node("Concat", [f"p{k}" for k in range(4)], ["q"], axis=1),
              h.make_node("DepthToSpace", ["q"], ["d"], blocksize=2, mode="DCR"), h.make_node("Relu", ["d"], ["y"])]
    f["2x2 Conv + DepthToSpace"] = session(nodes, inits, [b, cin, n, n])
    return f


def timed(group: str, forms: dict, x: np.ndarray) -> list:
    ref = next(iter(forms.values())).run(None, {"x": x})[0]
    times = {k: [] for k in forms}
    for _ in range(args.rounds):
        for k, s in forms.items():
            t0 = time.perf_counter()
            s.run(None, {"x": x})
            times[k].append(time.perf_counter() - t0)
    base = float(np.median(next(iter(times.values()))))
    rows = []
    for k, s in forms.items():
        out = s.run(None, {"x": x})[0]
        out = out.transpose(0, 2, 1) if k.startswith("transposed") else out  # (P, K C, B) -> (P, B, K C)
        same = out.size == ref.size and "triangular" not in k  # the block forms time the shapes, not the values
        rows.append({"group": group, "form": k, "p50_ms": float(np.median(times[k])) * 1e3,
                     "over_today": float(np.median(times[k])) / base,
                     "max_abs_diff": float(np.abs(out.reshape(ref.shape) - ref).max()) if same else None})
    return rows


rows = []
for b in (1, 8):
    rows += timed(f"whitening product, batch {b}", product_forms(b), rng.standard_normal((P, b, C)).astype(np.float32))
for cin, cout, n in ((128, 64, 16), (64, 128, 8)):
    for b in (1, 8):
        rows += timed(f"x2 up {cin}->{cout} from {n}x{n}, batch {b}", upsampling_forms(cin, cout, n, b),
                      rng.standard_normal((b, cin, n, n)).astype(np.float32))
print(table(rows, [("group", "op", None), ("form", "form", None), ("p50_ms", "p50 ms", "{:.3f}"),
                   ("over_today", "/ today", "{:.2f}"), ("max_abs_diff", "max diff", "{:.1e}")]))
write_json(args.name, {"rounds": args.rounds, "rows": rows})
