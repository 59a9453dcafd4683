"""`hfr-edge train` and `hfr-edge eval` as a user runs them, on tiny generated data."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def hfr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hfr_edge", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def cli_ckpt(syn_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ckpt.pt"
    r = hfr("train", syn_data, "-o", out, "--epochs", "2", "--image-size", "64", "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and out.is_file()
    n = torch_load(out)["norm"]["n_images"]  # a handful held out: train says the threshold is a rough guess
    assert f"({n} held-out normals: mean" in r.stderr and n < 30
    assert f"threshold: mean + 3 std of {n} held-out images is a rough guess" in r.stderr
    return out


def torch_load(path):
    import torch

    return torch.load(path, weights_only=True)


def test_train_writes_a_complete_checkpoint(cli_ckpt, syn_data):
    import torch

    ckpt = torch.load(cli_ckpt, weights_only=True)
    assert ckpt["config"]["backbone"] == "efficientnet_lite0" and ckpt["config"]["image_size"] == 64
    t = ckpt["train"]
    assert t["epochs"] == 2 and t["format"] == "mvtec" and t["holdout_images"] >= 1
    assert t["data"] == str(syn_data.resolve())
    assert [p.name for p in cli_ckpt.parent.iterdir()] == ["ckpt.pt"]  # no temp file left
    c = ckpt["config"]  # the defaults: --preset surface
    assert (c["decoder"], c["decoder_convs"], c["up_kernel"], c["stats"]) == ("dense", 1, 4, "local")
    # the statistics' weights: 1,0,0 for one part at one place, 0,1,1 where the training images are
    # aligned, 0,0.5,1 on a texture
    a = t["statistics"]
    kind = "texture" if a["alignment_ratio"] < 0.1 else "aligned" if a["alignment_ratio"] < 3 else "part"
    assert a["alignment_ratio"] > 0 and a["kind"] == kind and a["aligned"] == (kind != "texture")
    assert c["stats_level_weights"] == a["stats_level_weights"] == {
        "texture": [0.0, 0.5, 1.0], "aligned": [0.0, 1.0, 1.0], "part": [1.0, 0.0, 0.0]}[kind]
    assert c["level_weights"] == [0.0, 0.0, 1.0] and c["aligned_level_weights"] == [0.0, 1.0, 1.0]
    assert c["part_level_weights"] == [1.0, 0.0, 0.0]
    # a texture's covariances shared by 2 x 2 positions at strides 8 and 16, a covariance per position elsewhere
    assert c["stats_tile"] == a["stats_tile"] == ([1, 2, 2] if kind == "texture" else [1, 1, 1])
    # one part at one place trains the part's narrower decoder, every other kind the default one
    assert c["part_decoder_widths"] == [64, 48, 32]
    assert c["decoder_widths"] == ([64, 48, 32] if kind == "part" else [128, 64, 32])
    assert c["stats_dims"] == [12, 0, 0]
    assert c["score"] == "top"  # a folder of defects: the mean of the map's highest 1 %


def test_a_preset_and_options_beside_it(syn_data, tmp_path):
    import torch

    out = tmp_path / "light.pt"
    r = hfr("train", syn_data, "-o", out, "--epochs", "1", "--image-size", "64", "--decoder-widths", "16,8,8",
            "--preset", "light", "--up-kernel", "4")
    assert r.returncode == 0, r.stderr
    c = torch.load(out, weights_only=True)["config"]
    # the preset's separable decoder and statistics; the option given beside it wins
    assert (c["decoder"], c["decoder_convs"], c["up_kernel"], c["stats"]) == ("separable", 2, 4, "position")
    assert c["level_weights"] == [0.25, 1.0, 1.0] and c["stats_level_weights"] is None
    # --level-weights alone weighs both terms (the default's separate statistics weights give way)
    r = hfr("train", syn_data, "-o", out, "--epochs", "1", "--image-size", "64", "--decoder-widths", "16,8,8",
            "--level-weights", "0.25,1,1")
    assert r.returncode == 0, r.stderr
    c = torch.load(out, weights_only=True)["config"]
    assert c["level_weights"] == [0.25, 1.0, 1.0] and c["stats_level_weights"] == [0.25, 1.0, 1.0]
    assert c["aligned_level_weights"] is None and c["part_level_weights"] is None  # weights given: no choice
    assert c["part_decoder_widths"] is None and c["decoder_widths"] == [16, 8, 8]  # widths given: on every kind
    r = hfr("train", syn_data, "-o", out, "--epochs", "1", "--image-size", "64", "--decoder-widths", "16,8,8",
            "--preset", "paper", "--level-weights", "1,1,1")
    assert r.returncode == 0, r.stderr
    c = torch.load(out, weights_only=True)["config"]
    assert (c["stats"], c["level_weights"], c["decoder_widths"]) == ("none", [1.0, 1.0, 1.0], [16, 8, 8])
    assert c["score"] == "max"  # the paper's image score under `--score auto`
    r = hfr("train", syn_data, "-o", out, "--epochs", "1", "--image-size", "64", "--preset", "paper",
            "--score", "top")
    assert r.returncode == 0, r.stderr
    c = torch.load(out, weights_only=True)["config"]
    assert c["decoder_widths"] == [256, 128, 64] and c["score"] == "top"  # the preset's; the score asked for


def test_eval_checkpoint_and_onnx_agree(cli_ckpt, syn_data, tmp_path):
    rep_pt, rep_onnx = tmp_path / "pt.json", tmp_path / "onnx.json"
    r = hfr("eval", cli_ckpt, syn_data, "--report", rep_pt, "--figures", tmp_path / "figs")
    assert r.returncode == 0, r.stderr
    a = json.loads(rep_pt.read_text())
    assert {"image_auroc", "pixel_auroc", "aupro", "f1_max", "per_defect"} <= set(a)
    assert set(a["per_defect"]) == {"scratch", "spot", "crack", "missing"}
    assert 0 <= a["image_auroc"] <= 1 and 0 <= a["pixel_auroc"] <= 1
    assert (tmp_path / "figs" / "roc.png").is_file() and list((tmp_path / "figs").glob("worst_*.png"))
    assert hfr("export", cli_ckpt, "-o", tmp_path / "m.onnx").returncode == 0
    r = hfr("eval", tmp_path / "m.onnx", syn_data, "--report", rep_onnx, "--provider", "cpu")
    assert r.returncode == 0, r.stderr
    b = json.loads(rep_onnx.read_text())
    assert b["backend"].startswith("onnxruntime")
    at, f1 = b["at_threshold"], b["at_f1_threshold"]  # the operating points, printed and in the JSON
    assert at["threshold"] == 0.5 and at["n_anomalous"] == b["n_anomalous"] and at["n_good"] == b["n_images"] - b["n_anomalous"]
    assert f1["threshold"] <= b["f1_threshold"] < f1["threshold"] + 0.001
    assert f"flags {at['anomalous_flagged']} of {at['n_anomalous']} (" in r.stderr
    if f1["threshold"] != 0.5:
        assert f"`run --threshold {f1['threshold']:.3f}`" in r.stderr
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        assert round(a[k], 4) == round(b[k], 4), k


def test_stats_dims_project_and_are_reported(tmp_path, syn_data):
    """`--stats-dims`: the statistics of a level in its k leading principal directions; the checkpoint
    records the counts and the share of the variance they keep, and train says so."""
    import torch

    out = tmp_path / "d.pt"
    r = hfr("train", syn_data, "-o", out, "--epochs", "1", "--image-size", "64", "--decoder-widths", "16,8,8",
            "--stats-level-weights", "1,0,1", "--stats-dims", "8,0,16", "--stats-components", "1")
    assert r.returncode == 0, r.stderr
    ck = torch.load(out, weights_only=True)
    assert ck["config"]["stats_dims"] == [8, 0, 16]
    kept = ck["train"]["statistics"]["stats_dims"]
    assert sorted(kept) == ["16", "4"] and kept["4"][:2] == [8, 24] and kept["16"][:2] == [16, 112]
    assert all(0 < v[2] <= 1 for v in kept.values())
    assert ck["state_dict"]["gauss.proj0"].shape == (8, 24, 1, 1) and ck["state_dict"]["gauss.white2"].shape[1:] == (16, 16)
    assert "stride 4 in its 8 leading directions of 24 channels" in r.stderr


def test_folder_format_without_masks(tmp_path, syn_data):
    import shutil

    good = tmp_path / "good_only"
    shutil.copytree(syn_data / "train" / "good", good)
    test = tmp_path / "test"
    shutil.copytree(syn_data / "test", test)
    r = hfr("train", good, "-o", tmp_path / "c.pt", "--epochs", "1", "--image-size", "64")
    assert r.returncode == 0, r.stderr
    r = hfr("eval", tmp_path / "c.pt", good, "--test", test, "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["pixel_auroc"] is None and rep["aupro"] is None and rep["image_auroc"] is not None


@pytest.mark.parametrize("args,match", [
    (["train", "{tmp}/missing"], "missing"),
    (["train", "{tmp}/empty"], "empty"),
    (["train", "{data}", "--backbone", "vgg16"], "unknown backbone"),
    (["train", "{data}", "--image-size", "100"], "multiple of 32"),
    (["train", "{data}", "--epochs", "0"], "--epochs"),
    (["train", "{data}", "--normal-class", "3"], "normal"),
    (["eval", "{tmp}/nope.pt", "{data}"], "nope.pt"),
])
def test_bad_input_is_one_line(tmp_path, syn_data, args, match):
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, data=syn_data) for a in args]
    r = hfr(*args, "-o" if args[0] == "train" else "--report", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("hfr-edge: error:") and match.lower() in line.lower(), line
    assert not (tmp_path / "out").exists()


def test_one_class_formats_score_by_the_mean(tmp_path):
    import torch

    from hfr_edge.train import ONE_CLASS_MEMORY

    from test_data import make_idx

    root = make_idx(tmp_path / "mnist", n_train=40, n_test=20)
    for score, want, memory in (("auto", "mean", "auto"), ("max", "max", "none")):
        out = tmp_path / f"{score}.pt"
        r = hfr("train", root, "--format", "mnist", "--normal-class", "3", "-o", out, "--epochs", "1",
                "--image-size", "32", "--score", score, "--memory", memory)
        assert r.returncode == 0, r.stderr
        ckpt = torch.load(out, weights_only=True)
        # a one-class format keeps a memory of its training images for the image score unless told not to
        kept = ckpt["config"]["memory_images"]
        want_w = ONE_CLASS_MEMORY["memory_weight"] if memory == "auto" else 0.0
        assert (kept > 0, ckpt["config"]["memory_weight"]) == (memory == "auto", want_w)
        assert ("memory: the features of" in r.stderr) == (memory == "auto")
        assert ckpt["config"]["score"] == want
        assert (ckpt["norm"]["map_threshold"] is None) == (want == "max")
        # centred digits would read as aligned: the one-class protocol keeps its statistics weights
        assert ckpt["config"]["aligned_level_weights"] is None and ckpt["config"]["part_level_weights"] is None
        assert ckpt["config"]["stats_level_weights"] == [0.0, 0.5, 1.0]
    r = hfr("eval", tmp_path / "auto.pt", root, "--format", "mnist", "--normal-class", "3",
            "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["image_auroc"] is not None


@pytest.mark.parametrize("opt,val,match", [("--level-weights", "1,1", "three numbers"),
                                           ("--level-weights", "0,0,0", "at least one positive"),
                                           ("--score", "median", "--score"), ("--up-kernel", "3", "--up-kernel"),
                                           ("--decoder-widths", "64,32", "three integers"),
                                           ("--tap16", "middle", "--tap16"), ("--decoder", "sparse", "--decoder"),
                                           ("--stats-dims", "12,0", "three integers"),
                                           ("--memory", "1", "two weights"),
                                           ("--stats-dims", "25,0,0", "24 channels")])
def test_bad_score_options_are_one_line(tmp_path, syn_data, opt, val, match):
    r = hfr("train", syn_data, opt, val, "-o", tmp_path / "c.pt")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert match in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "c.pt").exists()
