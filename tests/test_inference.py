"""From checkpoint to clinic: a model that knows its tree, load_model, hierclf predict, hierclf export, Ray.

One tiny run (``small_cnn``, one epoch on 140 generated PNG images) is trained once; every test reads its
checkpoint. References are independent of the code under test: the training run's own prediction files,
brute-force sums over ``nx.descendants``, decisions recomputed with numpy from the written probabilities,
the evaluation's report, and the eager model against each exported artefact.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from inference_fixtures import (
    DERMAMNIST,
    PROTOCOL,
    Run,
    edited_tree,
    run_config,
    write_png_splits,
    write_tree,
)

from hierclf import Taxonomy
from hierclf.cli import main
from hierclf.evaluation.prediction_files import read_predictions
from hierclf.inference import load_model, load_models
from hierclf.inference.export import FORMATS, export_model, run_artefact
from hierclf.inference.images import image_list
from hierclf.inference.prediction_loop import Predictor, UnreadableImageError
from hierclf.inference.scoring import ScoringGraph, scoring_graph
from hierclf.inference.thresholds import thresholds_from_report
from hierclf.train.checkpoint import record_thresholds
from hierclf.train.identity import TreeMismatchError, tree_fingerprint
from hierclf.train.loop import fit

SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("inference")
    csv = write_png_splits(root)
    taxonomy = root / "tree.yaml"
    shutil.copy(DERMAMNIST, taxonomy)
    config = run_config(root, csv, taxonomy)
    fit(config, progress=False)
    return Run(root, root / "run", taxonomy, config, csv)


@pytest.fixture(scope="module")
def report(run: Run) -> Path:
    """The evaluation of the run's predictions under the DermaMNIST protocol (thresholds on validation)."""
    from hierclf.evaluation.pipeline import evaluate
    from hierclf.evaluation.protocol_format import load_protocol
    from hierclf.evaluation.report import write_report

    tax = Taxonomy.from_yaml(DERMAMNIST)
    proto = load_protocol(PROTOCOL, tax)
    result = evaluate(tax, proto, [run.out / "predictions/val.npz"], [run.out / "predictions/test.npz"])
    write_report(result, run.root / "evaluation")
    return run.root / "evaluation" / "report.json"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def hierclf(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the CLI in this process (``hierclf.cli.main``), as the shell would: exit code and output."""

    def call(*args: str | Path) -> Result:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return call


def one_line_error(result: Result, command: str) -> str:
    """The single error line of a failed command (exit 1, no traceback, no "internal error")."""
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"hierclf {command}: error: ") and "Traceback" not in result.stderr
    return lines[0]


# --- a model that knows its tree ------------------------------------------------------------------------


def test_checkpoints_record_the_model(run: Run) -> None:
    tax = Taxonomy.from_yaml(DERMAMNIST)
    for name in ("best.pt", "checkpoint.pt"):
        saved = torch.load(run.out / name, weights_only=True)["identity"]
        assert saved["fingerprint"] == tree_fingerprint(tax)
        assert saved["classes"] == list(tax.leaves) and saved["leaf_head"]
        assert saved["backbone"] == {
            "spec": "small_cnn",
            "pretrained": False,
            "in_size": 28,
            "in_channels": 3,
        }
        assert saved["preprocessing"]["size"] == 28 and len(saved["preprocessing"]["mean"]) == 3
        assert Taxonomy.from_text(saved["taxonomy_yaml"]) == tax
        assert saved["version"] not in ("", "unknown")
    done = json.loads((run.out / "DONE").read_text())
    assert done["model"]["fingerprint"] == tree_fingerprint(tax)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("swap", "classes reordered: dermatofibroma and vascular_lesion swapped"),
        ("rename", "classes added: vascular_anomaly; classes removed: vascular_lesion"),
        ("add", "classes added: blue_nevus"),
        ("remove", "classes removed: dermatofibroma"),
        ("move", "classes reordered"),
    ],
)
def test_another_tree_is_refused_on_load_naming_the_change(run: Run, edit: str, expected: str) -> None:
    other = Taxonomy.from_dict(edited_tree(edit))
    with pytest.raises(TreeMismatchError) as caught:
        load_model(run.out / "best.pt", taxonomy=other)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    load_model(run.out / "best.pt", taxonomy=Taxonomy.from_yaml(DERMAMNIST))  # the same tree is accepted


def test_resume_and_reuse_refuse_a_swapped_tree(run: Run, tmp_path: Path) -> None:
    tree = tmp_path / "tree.yaml"
    shutil.copy(DERMAMNIST, tree)
    config = run_config(tmp_path, run.csv, tree, epochs=2)
    partial = fit(config, progress=False, stop_after_epochs=1)
    assert not partial.finished and (tmp_path / "run" / "checkpoint.pt").is_file()
    write_tree(tree, edited_tree("swap"))  # the same path, the siblings swapped
    with pytest.raises(TreeMismatchError, match="dermatofibroma and vascular_lesion swapped"):
        fit(config, progress=False)
    shutil.copy(DERMAMNIST, tree)
    assert fit(config, progress=False).finished
    write_tree(tree, edited_tree("swap"))
    with pytest.raises(TreeMismatchError, match="cannot reuse .*swapped"):
        fit(config, progress=False)


def test_old_checkpoint_without_a_record_is_refused(run: Run, tmp_path: Path) -> None:
    data = torch.load(run.out / "best.pt", weights_only=True)
    del data["identity"]
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(Exception, match="does not record the model's tree"):
        load_model(tmp_path / "old.pt")


# --- load_model ---------------------------------------------------------------------------------------


def test_load_model_round_trip(run: Run) -> None:
    import hierclf

    model = hierclf.load_model(run.out)  # a run folder: its best.pt
    assert not model.training and model.columns == Taxonomy.from_yaml(DERMAMNIST).leaves
    saved = torch.load(run.out / "best.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # the model alone reproduces the run's own test predictions, read back from the PNG files
    reference = read_predictions(run.out / "predictions" / "test.npz")
    table = Predictor(ScoringGraph(model), batch_size=16).predict(image_list(csv=run.csv["test"]))
    assert table.ids.tolist() == reference.ids.tolist()
    np.testing.assert_allclose(table.probs, reference.probs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(table.probs.sum(1), 1.0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_model_on_cuda(run: Run) -> None:
    model = load_model(run.out / "best.pt", device="cuda")
    images = torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8)
    on_cpu = load_model(run.out / "best.pt")(images)
    torch.testing.assert_close(model(images.cuda()).cpu(), on_cpu, atol=1e-5, rtol=0)


# --- predict -----------------------------------------------------------------------------------------


def _brute_force_nodes(probs: np.ndarray, tax: Taxonomy, nodes: list[str]) -> np.ndarray:
    leaves = list(tax.leaves)
    out = np.zeros((len(probs), len(nodes)))
    for k, node in enumerate(nodes):
        under = {node} | nx.descendants(tax.graph, node)
        out[:, k] = probs[:, [j for j, leaf in enumerate(leaves) if leaf in under]].sum(1)
    return out


def test_predict_a_csv_of_paths_with_nodes_and_decisions(
    run: Run, report: Path, hierclf: Callable[..., Result]
) -> None:
    out = run.root / "scored.csv"
    result = hierclf(
        "predict", run.out / "best.pt", "--csv", run.csv["test"], "--node", "malignant",
        "-n", "benign,melanoma", "--thresholds-from", report, "--out", out, "--batch-size", "16",
        "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 70 rows" in result.stdout
    tax = Taxonomy.from_yaml(DERMAMNIST)
    table = read_predictions(out, check_probs=False)  # no taxonomy: every column as written
    header = list(table.columns)
    assert header[:7] == list(tax.leaves) and header[7:10] == [
        "node:malignant",
        "node:benign",
        "node:melanoma",
    ]
    probs = table.probs[:, :7]
    reference = read_predictions(run.out / "predictions" / "test.npz")
    assert table.ids.tolist() == reference.ids.tolist()
    np.testing.assert_allclose(probs, reference.probs, atol=1e-6, rtol=0)
    brute = _brute_force_nodes(probs, tax, ["malignant", "benign", "melanoma"])
    np.testing.assert_allclose(table.probs[:, 7:10], brute, atol=1e-6)
    data = json.loads(report.read_text())
    for name, task in data["tasks"].items():
        pos = _brute_force_nodes(probs, tax, task["positive"]).sum(1)
        neg = _brute_force_nodes(probs, tax, task["negative"]).sum(1)
        score = np.where(pos + neg > 0, pos / np.where(pos + neg > 0, pos + neg, 1), 0.5)
        np.testing.assert_allclose(table.probs[:, header.index(f"score:{name}")], score, atol=1e-12)
        flagged = table.probs[:, header.index(f"decision:{name}")] == 1
        np.testing.assert_array_equal(flagged, score >= task["thresholds"]["per_seed"][0])
        # the evaluation's test sensitivity at its validation threshold, from the written decisions
        positive = np.array(
            [any(tax.is_under(label, p) for p in task["positive"]) for label in reference.labels]
        )
        assert flagged[positive].mean() == pytest.approx(task["metrics"]["sensitivity"]["per_seed"][0])


def test_predict_a_folder_with_a_corrupt_image(
    run: Run, tmp_path: Path, hierclf: Callable[..., Result]
) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        shutil.copy(run.root / "img" / f"test_{i}.png", folder / ("sub" if i % 2 else "") / f"case{i}.PNG")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.csv"
    error = one_line_error(hierclf("predict", run.out, "--folder", folder, "--out", out), "predict")
    assert str(folder / "broken.png") in error and "--skip-bad" in error and not out.exists()
    result = hierclf("predict", run.out, "--folder", folder, "--out", out, "--skip-bad", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "1 unreadable image(s) left out" in result.stdout and "broken.png" in result.stdout
    ids = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
    assert ids == ["case0.PNG", "case2.PNG", "case4.PNG", "sub/case1.PNG", "sub/case3.PNG"]
    reference = read_predictions(run.out / "predictions" / "test.npz")
    got = np.loadtxt(out, delimiter=",", skiprows=1, usecols=range(1, 8))
    np.testing.assert_allclose(got[0], reference.probs[0], atol=1e-6)


def test_predict_images_on_the_command_line_and_npz_out(
    run: Run, tmp_path: Path, hierclf: Callable[..., Result]
) -> None:
    images = [run.root / "img" / f"test_{i}.png" for i in (3, 1)]
    out = tmp_path / "two.npz"
    assert hierclf("predict", run.out / "best.pt", *images, "--out", out, "--device", "cpu").returncode == 0
    got = read_predictions(out)
    assert got.ids.tolist() == [str(p) for p in images]
    reference = read_predictions(run.out / "predictions" / "test.npz")
    np.testing.assert_allclose(got.probs, reference.probs[[3, 1]], atol=1e-6)


def test_predict_parquet_out_is_the_csv_table_and_the_bar_counts_every_image(
    run: Run, tmp_path: Path, hierclf: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out x.parquet`` goes through the prediction-file writer: the same ids and values as the CSV;
    the progress bar (on a terminal only) counts every image, good or bad."""
    import pyarrow.parquet as pq

    from hierclf.inference import prediction_loop

    args = ("predict", run.out, "--csv", run.csv["test"], "-n", "malignant")
    assert hierclf(*args, "--out", tmp_path / "t.csv").returncode == 0
    assert hierclf(*args, "--out", tmp_path / "t.parquet").returncode == 0
    csv, parquet = (read_predictions(tmp_path / f"t.{ext}", check_probs=False) for ext in ("csv", "parquet"))
    assert parquet.columns == csv.columns and parquet.ids.tolist() == csv.ids.tolist()
    # float32 values: Parquet keeps their bits, CSV their shortest text; both read back to the same float32
    np.testing.assert_array_equal(parquet.probs.astype(np.float32), csv.probs.astype(np.float32))
    assert pq.read_schema(tmp_path / "t.parquet").names[0] == "id"

    counted: list[int] = []

    class Bar:
        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, k: int) -> None:
            counted.append(k)

    monkeypatch.setattr(prediction_loop.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("tqdm.tqdm", lambda **kw: (counted.append(-kw["total"]), Bar())[1])
    assert hierclf(*args, "--out", tmp_path / "bar.csv", "--batch-size", "32").returncode == 0
    assert counted[0] == -70 and sum(counted[1:]) == 70 and len(counted) == 4  # 32 + 32 + 6
    counted.clear()
    assert hierclf(*args, "--out", tmp_path / "quiet.csv", "--no-progress").returncode == 0
    assert counted == []


def test_predict_errors_are_one_line(run: Run, tmp_path: Path, hierclf: Callable[..., Result]) -> None:
    test_csv = run.csv["test"]
    cases = {
        "not found": ("predict", tmp_path / "missing.pt", "--csv", test_csv, "-o", tmp_path / "o.csv"),
        "not a PyTorch file": ("predict", test_csv, "--csv", test_csv, "-o", tmp_path / "o.csv"),
        "did you mean 'malignant'": (
            "predict", run.out, "--csv", test_csv, "--node", "malignat", "-o", tmp_path / "o.csv"
        ),
        "the output is also an input": ("predict", run.out, "--csv", test_csv, "-o", test_csv),
        "stores no thresholds": (
            "predict", run.out, "--csv", test_csv, "--thresholds", "-o", tmp_path / "o.csv"
        ),
        "swapped": (
            "predict", run.out, "--csv", test_csv, "-o", tmp_path / "o.csv",
            "--taxonomy", write_tree(tmp_path / "swapped.yaml", edited_tree("swap")),
        ),
    }  # fmt: skip
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "weights.pt")
    cases["not a hierclf checkpoint"] = (
        "predict",
        tmp_path / "weights.pt",
        "--csv",
        test_csv,
        "-o",
        tmp_path / "o.csv",
    )
    for expected, args in cases.items():
        assert expected in one_line_error(hierclf(*args), "predict"), expected
    assert not (tmp_path / "o.csv").exists()


def test_stored_thresholds_are_used(run: Run, report: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "best.pt"
    shutil.copy(run.out / "best.pt", ckpt)
    found = thresholds_from_report(report)
    record_thresholds(ckpt, {k: v.to_dict() for k, v in found.items()})
    model = load_model(ckpt)
    assert model.thresholds == found
    images = image_list(csv=run.csv["test"])
    stored = Predictor(scoring_graph(model, stored=True)).predict(images)
    from_report = Predictor(scoring_graph(model, report=str(report))).predict(images)
    np.testing.assert_array_equal(stored.decisions, from_report.decisions)
    assert stored.tasks == tuple(found)


# --- ensembles -----------------------------------------------------------------------------------------


def test_ensemble_prediction_is_the_mean_and_the_or_rule(run: Run, report: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    shutil.copy(run.out / "best.pt", a)
    shutil.copy(run.out / "checkpoint.pt", b)  # the last epoch: here the best one too, but another file
    with torch.no_grad():
        data = torch.load(b, weights_only=True)
        data["model"]["head.linear.bias"] += torch.linspace(-1, 1, 7)  # make the second model differ
        torch.save(data, b)
    found = thresholds_from_report(report)
    record_thresholds(a, {k: v.to_dict() for k, v in found.items()})
    record_thresholds(b, {k: {**v.to_dict(), "threshold": v.threshold * 0.9} for k, v in found.items()})
    images = image_list(csv=run.csv["test"])
    one = [Predictor(scoring_graph(load_model(p), stored=True)).predict(images) for p in (a, b)]
    ensemble = load_models([a, b])
    mean = Predictor(scoring_graph(ensemble, nodes=["malignant"])).predict(images)
    np.testing.assert_allclose(mean.probs, (one[0].probs + one[1].probs) / 2, atol=1e-7)
    either = Predictor(scoring_graph(ensemble, stored=True, rule="or")).predict(images)
    np.testing.assert_array_equal(either.decisions, one[0].decisions | one[1].decisions)
    assert either.decisions.sum() >= max(o.decisions.sum() for o in one)


# --- export ------------------------------------------------------------------------------------------


def _artefact_outputs(path: Path, fmt: str, images: torch.Tensor) -> tuple[np.ndarray, ...]:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return tuple(session.run(None, {"images": images.numpy()}))
    return run_artefact(path, fmt, images)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_parity_at_batch_1_7_64(run: Run, report: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime (a dev dependency) checks ONNX artefacts")
        pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript")
    model = load_model(run.out / "best.pt")
    tasks = list(thresholds_from_report(report).values())
    path = tmp_path / f"model{SUFFIX[fmt]}"
    result = export_model(
        model, path, nodes=["malignant", "melanoma"], fmt=fmt, tasks=tasks, check_batches=()
    )
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["outputs"]["probabilities"]["columns"] == [
        "malignant",
        "melanoma",
    ]
    reference = ScoringGraph(model, tasks=tasks)
    for batch in (1, 7, 64):
        images = torch.randint(
            0, 256, (batch, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(batch)
        )
        probs, decisions = _artefact_outputs(path, fmt, images)
        with torch.no_grad():
            eager = model.node_probabilities(images, ["malignant", "melanoma"]).numpy()
            _, _, scores, flags = reference(images)
        assert probs.shape == (batch, 2) and decisions.shape == (batch, len(tasks))
        np.testing.assert_allclose(probs, eager, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(decisions.astype(bool), flags.numpy())


@pytest.mark.parametrize("fmt", ["exported-program", "onnx"])
def test_export_float_input_and_an_ensemble_as_one_artefact(
    run: Run, tmp_path: Path, fmt: str, hierclf: Callable[..., Result]
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime (a dev dependency) checks ONNX artefacts")
        pytest.importorskip("onnxscript", reason="the ONNX exporter needs onnxscript")
    b = tmp_path / "b.pt"
    data = torch.load(run.out / "best.pt", weights_only=True)
    data["model"]["head.linear.bias"] += torch.linspace(-1, 1, 7)
    torch.save(data, b)
    result = hierclf(
        "export", run.out, b, "--nodes", "benign", "--nodes", "keratinocyte_carcinoma", "--format", fmt,
        "--input", "float", "--out", tmp_path / f"ensemble{SUFFIX[fmt]}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 models (mean rule)" in result.stdout
    members = [load_model(run.out), load_model(b)]
    for batch in (1, 7, 64):
        images = torch.rand((batch, 3, 28, 28), generator=torch.Generator().manual_seed(batch))
        (probs,) = _artefact_outputs(tmp_path / f"ensemble{SUFFIX[fmt]}", fmt, images)
        with torch.no_grad():
            each = [m.node_probabilities(images, ["benign", "keratinocyte_carcinoma"]) for m in members]
        np.testing.assert_allclose(probs, ((each[0] + each[1]) / 2).numpy(), atol=1e-5, rtol=0)


def test_export_errors_are_one_line(run: Run, tmp_path: Path, hierclf: Callable[..., Result]) -> None:
    onnx = ("-f", "onnx", "-o", tmp_path / "m.onnx")
    cases = {
        "not found": ("export", tmp_path / "none.pt", "--nodes", "malignant", *onnx),
        "did you mean 'melanoma'": ("export", run.out, "--nodes", "melanomma", *onnx),
        "is a .pt2 file": (
            "export",
            run.out,
            "--nodes",
            "malignant",
            "-f",
            "exported-program",
            "-o",
            tmp_path / "m.pt",
        ),
        "not a PyTorch file": ("export", run.csv["test"], "--nodes", "malignant", *onnx),
        "the or rule combines several models": (
            "export",
            run.out,
            "--nodes",
            "malignant",
            "--rule",
            "or",
            *onnx,
        ),
    }
    for expected, args in cases.items():
        assert expected in one_line_error(hierclf(*args), "export"), expected


# --- Ray -----------------------------------------------------------------------------------------------


def test_ray_engine_matches_the_single_process_path(run: Run, report: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray.data", reason="the Ray engine is the optional extra hierclf[ray] (ray[data])")
    from hierclf.inference.ray_engine import predict_with_ray

    model = load_model(run.out)
    graph = scoring_graph(model, nodes=["malignant", "keratinocyte_carcinoma"], report=str(report))
    images = image_list(csv=run.csv["test"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with_bad = image_list([*images.paths[:30], broken, *images.paths[30:]])
    local = Predictor(graph, batch_size=16, skip_bad=True).predict(with_bad)
    ray = predict_with_ray([run.out / "best.pt"], with_bad, graph, batch_size=16, actors=1, skip_bad=True)
    assert ray.ids.tolist() == local.ids.tolist() and len(ray) == len(images)
    assert [b.path for b in ray.skipped] == [b.path for b in local.skipped] == [str(broken)]
    np.testing.assert_allclose(ray.values(), local.values(), atol=1e-6, rtol=0)
    assert ray.output_columns() == local.output_columns()
    with pytest.raises(UnreadableImageError, match="broken.png"):
        predict_with_ray([run.out / "best.pt"], with_bad, graph, batch_size=16)
