"""Frozen-feature probes: kNN against scikit-learn's brute-force neighbours and a loop over samples, the
linear probe's C chosen on validation as a hand-run grid of scikit-learn fits chooses it, the feature cache
reused, invalidated and resumed after an interruption, and probe predictions evaluated end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hierclf.evaluation.pipeline import evaluate
from hierclf.evaluation.prediction_files import read_predictions
from hierclf.evaluation.protocol_format import protocol_from_dict
from hierclf.probe.features import FeatureExtractor
from hierclf.probe.knn import knn_neighbours, knn_probabilities
from hierclf.probe.linear import fit_linear_probe
from hierclf.probe.probing import ProbeOptions, run_probes
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _features(n: int, d: int, seed: int, n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, d))
    return (centres[y] + rng.normal(scale=1.5, size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize(("k", "memory"), [(1, 2**30), (7, 2**30), (7, 4 * 97 * 3)])
def test_knn_neighbours_match_scikit_learn_brute_force(k: int, memory: int) -> None:
    from sklearn.neighbors import NearestNeighbors

    bank, _ = _features(97, 16, 0)
    queries, _ = _features(53, 16, 1)
    sims, idx = knn_neighbours(bank, queries, k, device="cpu", memory_bytes=memory)  # memory: chunks of 3
    ref = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank)
    dist, ref_idx = ref.kneighbors(queries)
    assert np.array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, 1 - dist, atol=1e-5)


@pytest.mark.parametrize("weighting", ["distance", "uniform"])
def test_knn_votes_match_a_loop_over_samples(weighting: str) -> None:
    bank, bank_y = _features(120, 8, 2)
    queries, _ = _features(40, 8, 3)
    k, t = 9, 0.07
    probs = knn_probabilities(
        bank,
        bank_y,
        queries,
        n_classes=5,
        k=k,
        temperature=t,
        weighting=weighting,
        device="cpu",
        memory_bytes=4 * 120 * 7,
    )
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    expected = np.zeros((len(queries), 5))
    for i, q in enumerate(queries):  # the brute-force reference: one query at a time
        s = bn @ (q / np.linalg.norm(q))
        top = np.argsort(-s)[:k]
        for j in top:
            expected[i, bank_y[j]] += np.exp(s[j] / t) if weighting == "distance" else 1.0
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert np.all(probs[:, 4] == 0)  # a class no bank row has gets no vote


def test_linear_probe_chooses_c_on_validation_like_a_hand_run_grid() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    x, y = _features(300, 12, 4)
    xv, yv = _features(120, 12, 5)
    cs = (1e-3, 1e-1, 10.0)
    probe = fit_linear_probe(x, y, xv, yv, n_classes=4, Cs=cs)
    scaler = StandardScaler().fit(x)
    losses = []
    for c in cs:
        ref = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x), y)
        losses.append(log_loss(yv, ref.predict_proba(scaler.transform(xv)), labels=[0, 1, 2, 3]))
    assert [g[0] for g in probe.grid] == list(cs)
    np.testing.assert_allclose([g[1] for g in probe.grid], losses, rtol=1e-3)
    assert cs[int(np.argmin(losses))] == probe.C
    best = LogisticRegression(C=probe.C, max_iter=1000).fit(scaler.transform(x), y)
    np.testing.assert_allclose(probe.predict_proba(xv), best.predict_proba(scaler.transform(xv)), atol=1e-3)


def test_linear_probe_columns_of_absent_classes_are_zero() -> None:
    x, y = _features(200, 6, 6, n_classes=3)
    xv, yv = _features(60, 6, 7, n_classes=3)
    probs = fit_linear_probe(x, y, xv, yv, n_classes=5, Cs=(1.0,)).predict_proba(xv)
    assert probs.shape == (60, 5) and np.all(probs[:, 3:] == 0) and np.allclose(probs.sum(1), 1, atol=1e-5)


# --- the feature cache -------------------------------------------------------------------------------------


def _config(tmp_path: Path, **extra: object) -> TrainConfig:
    data = {
        "source": "synthetic",
        "root": str(tmp_path / "data"),
        "synthetic": {"n_train": 84, "n_val": 42, "n_test": 42, "seed": 0},
    }
    data.update(extra.pop("data", {}))  # type: ignore[arg-type]
    settings = {
        "taxonomy": str(REPO / "taxonomy" / "dermamnist.yaml"),
        "data": data,
        "device": "cpu",
        **extra,
    }
    return TrainConfig.model_validate(settings)


def _source(config: TrainConfig, split: str):
    from hierclf.train.distributed import init_process_group
    from hierclf.train.inputs import load_sources

    return load_sources(config, Taxonomy.from_yaml(config.taxonomy), init_process_group(torch.device("cpu")))[
        split
    ]


def test_features_are_cached_and_reused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    source = _source(config, "train")
    first = FeatureExtractor(config, cache_dir=tmp_path / "cache", shard_size=32)
    a = first.features(source)
    assert not a.reused and first.extracted_rows == len(source) == a.features.shape[0]
    again = FeatureExtractor(config, cache_dir=tmp_path / "cache", shard_size=32)
    b = again.features(source)
    assert b.reused and again.extracted_rows == 0 and np.array_equal(a.features, b.features)
    assert b.ids.tolist() == list(source.ids) and b.labels.tolist() == list(source.labels)
    # the same as a forward pass of the backbone on the preprocessed images, batch by batch
    from hierclf.data.transforms import eval_transform

    prep = first.preprocessing
    tf = eval_transform(prep.size, mean=prep.mean, std=prep.std)
    x = torch.stack([tf(source.load_image(i)) for i in range(5)])
    with torch.no_grad():
        np.testing.assert_allclose(first.backbone(x).numpy(), a.features[:5], atol=1e-5)
    meta = json.loads((tmp_path / "cache" / a.key / "meta.json").read_text())
    assert (
        meta["n"] == len(source)
        and meta["n_features"] == 128
        and not list((tmp_path / "cache" / a.key).glob("part-*"))
    )


def test_cache_key_changes_with_weights_preprocessing_and_data(tmp_path: Path) -> None:
    config = _config(tmp_path)
    source = _source(config, "train")
    base = FeatureExtractor(config, cache_dir=tmp_path / "c").key(source)
    assert FeatureExtractor(config, cache_dir=tmp_path / "c").key(source) == base
    other_seed = FeatureExtractor(_config(tmp_path, seed=1), cache_dir=tmp_path / "c")  # other random weights
    other_std = FeatureExtractor(_config(tmp_path, data={"std": [0.5, 0.5, 0.5]}), cache_dir=tmp_path / "c")
    other_size = FeatureExtractor(_config(tmp_path, data={"input_size": 32}), cache_dir=tmp_path / "c")
    keys = {e.key(source) for e in (other_seed, other_std, other_size)}
    assert base not in keys and len(keys) == 3
    assert (
        FeatureExtractor(config, cache_dir=tmp_path / "c").key(_source(config, "val")) != base
    )  # other data


def test_an_interrupted_extraction_resumes_after_its_last_shard(tmp_path: Path, monkeypatch) -> None:
    config = _config(tmp_path)
    source = _source(config, "train")
    extractor = FeatureExtractor(config, cache_dir=tmp_path / "cache", shard_size=32)
    real = extractor._forward
    calls = []

    def dies_on_the_third_shard(src, start, stop):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(src, start, stop)

    monkeypatch.setattr(extractor, "_forward", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        extractor.features(source)
    folder = tmp_path / "cache" / extractor.key(source)
    assert sorted(p.name for p in folder.glob("part-*")) == ["part-000000000.npy", "part-000000032.npy"]
    assert not (folder / "meta.json").exists()
    resumed = FeatureExtractor(config, cache_dir=tmp_path / "cache", shard_size=32)
    features = resumed.features(source)
    assert resumed.extracted_rows == len(source) - 64  # only the last shard was extracted
    fresh = FeatureExtractor(config, cache_dir=tmp_path / "fresh").features(source)
    np.testing.assert_allclose(features.features, fresh.features, atol=1e-6)


# --- end to end --------------------------------------------------------------------------------------------


def test_probe_predictions_are_evaluated_end_to_end(tmp_path: Path) -> None:
    config = _config(tmp_path, classes={"kind": "cut", "nodes": ["benign", "malignant"]})
    result = run_probes(
        config, out_dir=tmp_path / "out", options=ProbeOptions(ks=(10,), cache_dir=tmp_path / "c")
    )
    assert set(result.predictions) == {"knn_k10", "linear"} and result.classes == ("benign", "malignant")
    tax = Taxonomy.from_yaml(config.taxonomy)
    protocol = protocol_from_dict(
        {
            "name": "probe_check",
            "target_sensitivity": 0.9,
            "group_column": "group",
            "min_seeds": 1,
            "bootstrap": {"replicates": 50},
            "primary_metric": {"metric": "auc", "task": "malignant_vs_benign"},
            "tasks": [{"name": "malignant_vs_benign", "positive": ["malignant"], "negative": ["benign"]}],
        },
        tax,
    )
    for name, paths in result.predictions.items():
        test = read_predictions(paths["test"])
        assert test.columns == ("benign", "malignant") and len(test) == 42
        report = evaluate(tax, protocol, [paths["val"]], [paths["test"]], synthetic=True)
        auc = report.tasks["malignant_vs_benign"].metrics["auc"].value
        from sklearn.metrics import roc_auc_score

        y = np.isin(test.labels, tax.leaves_under("malignant"))  # every synthetic label is a leaf
        assert auc == pytest.approx(roc_auc_score(y, test.probs[:, 1]), abs=1e-9), name
