"""Entangled subsets: the worked example of entanglement.md §7, brute-force equality, ties, caching, the CLI."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from cli_helpers import DATA, finished_world
from conftest import smoke_run

from pllbench.cli import main
from pllbench.entangle.extractors import Extractor
from pllbench.entangle.pairs import (
    canonical_scores,
    center_distance,
    class_centroids,
    cross_class_pair_count,
    get_subsets,
    k_for_p,
    l2_normalize,
    parse_thresholds,
    parse_top,
    sharing_all_pairs,
    sharing_flags,
    subset_accuracy,
    subset_instances,
    top_cross_class_pairs,
)
from pllbench.errors import PllbenchError

# §7: six instances, 2-d features, 3 classes.
TOY_FEATURES = torch.tensor([[4, 1], [3, 2], [2, 3], [-1, 5], [4, -1], [1, -3]], dtype=torch.float64)
TOY_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
TOY_PRED = np.array([0, 1, 1, 1, 2, 0])
TOY_CANDS = np.array([[1, 0, 1], [1, 1, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]])
TOY_RANKING = [  # (i, j, a·b, |a|²|b|²)
    (1, 2, 12, 169), (0, 4, 15, 289), (0, 2, 11, 221), (1, 4, 10, 221), (1, 3, 7, 338), (2, 4, 5, 221),
    (0, 5, 1, 170), (0, 3, 1, 442), (1, 5, -3, 130), (3, 4, -9, 442), (2, 5, -7, 130), (3, 5, -16, 260),
]


def brute_force(features: torch.Tensor, labels: torch.Tensor, k: int):
    """Every cross-class pair i < j, scored one pair at a time (canonical_scores), sorted by (−s, i, j)."""
    i, j = np.triu_indices(len(features), 1)
    y = labels.numpy()
    valid = y[i] != y[j]
    i, j = i[valid], j[valid]
    s = torch.cat([canonical_scores(features, torch.from_numpy(i[a:a + 200_000]), torch.from_numpy(j[a:a + 200_000]))
                   for a in range(0, len(i), 200_000)]).numpy()
    order = np.lexsort((j, i, -s))[:k]
    return s[order], i[order], j[order]


@pytest.mark.parametrize("blocks", [(2, 2), (1, 1), (3, 2), (2, 5), (6, 6), (4096, 4096)])
def test_worked_example_ranking(blocks):
    feats = l2_normalize(TOY_FEATURES)
    assert cross_class_pair_count(TOY_LABELS) == 12
    top = top_cross_class_pairs(feats, TOY_LABELS, 12, [0.9, 0.5], *blocks)
    assert list(zip(top.rows.tolist(), top.cols.tolist())) == [(i, j) for i, j, _, _ in TOY_RANKING]
    exact = torch.tensor([dot / math.sqrt(norms) for _, _, dot, norms in TOY_RANKING], dtype=torch.float64)
    assert torch.allclose(top.scores, exact, atol=1e-15, rtol=0)
    assert [round(v, 6) for v in top.scores.tolist()[:4]] == [0.923077, 0.882353, 0.739940, 0.672673]
    assert top.counts == {0.9: 1, 0.5: 4}  # (0, 1) at 0.941742 is same-class


@pytest.mark.parametrize("p,k,instances,acc,dot,norms", [
    ("10", 2, [0, 1, 2, 4], Fraction(3, 4), 15, 289),
    ("20", 3, [0, 1, 2, 4], Fraction(3, 4), 11, 221),
    ("40", 5, [0, 1, 2, 3, 4], Fraction(4, 5), 7, 338),
    ("50", 6, [0, 1, 2, 3, 4], Fraction(4, 5), 5, 221),
])
def test_worked_example_subsets(p, k, instances, acc, dot, norms):
    ((_, fraction),) = parse_top(p)
    assert k_for_p(fraction, 12) == k
    top = top_cross_class_pairs(l2_normalize(TOY_FEATURES), TOY_LABELS, k, (), 2, 2)
    assert len(top.scores) == k
    assert float(top.scores[-1]) == pytest.approx(dot / math.sqrt(norms), abs=1e-15)
    u = subset_instances(top.rows.numpy(), top.cols.numpy())
    assert u.tolist() == instances
    assert subset_accuracy(u, TOY_LABELS.numpy(), TOY_PRED) == float(acc)
    assert (TOY_PRED == TOY_LABELS.numpy()).mean() == pytest.approx(4 / 6)


def test_worked_example_sharing():
    top = top_cross_class_pairs(l2_normalize(TOY_FEATURES), TOY_LABELS, 3, (), 2, 2)
    mutual, any_ = sharing_flags(top.rows.numpy(), top.cols.numpy(), TOY_LABELS.numpy(), TOY_CANDS)
    assert mutual.tolist() == [True, True, False] and any_.tolist() == [True, True, True]
    assert (mutual.mean(), any_.mean()) == (2 / 3, 1.0)
    assert sharing_all_pairs(TOY_LABELS.numpy(), TOY_CANDS) == (Fraction(2, 12), Fraction(8, 12))
    # the closed form equals the brute force over all 12 cross-class pairs
    every = top_cross_class_pairs(l2_normalize(TOY_FEATURES), TOY_LABELS, 12, (), 2, 2)
    mutual_all, any_all = sharing_flags(every.rows.numpy(), every.cols.numpy(), TOY_LABELS.numpy(), TOY_CANDS)
    assert (mutual_all.sum(), any_all.sum()) == (2, 8)


def test_worked_example_center_distance():
    centroids = class_centroids(TOY_FEATURES, TOY_LABELS)
    expected = [[0.901096, 0.398618], [0.179292, 0.906315], [0.643185, -0.595609]]
    assert torch.allclose(centroids, torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    assert torch.pdist(centroids).tolist() == pytest.approx([0.882473, 1.027135, 1.571934], abs=1e-6)
    assert center_distance(TOY_FEATURES, TOY_LABELS) == pytest.approx(1.160514, abs=1e-6)


def test_parse_top_is_exact_and_validated():
    assert parse_top("0.1,0.01,0.001") == [("0.1", Fraction(1, 10)), ("0.01", Fraction(1, 100)),
                                          ("0.001", Fraction(1, 1000))]
    assert parse_top("0.010, 1e-3,0.01") == [("0.01", Fraction(1, 100)), ("0.001", Fraction(1, 1000))]
    assert [k_for_p(p, 45_000_000) for _, p in parse_top("0.1,0.01,0.001")] == [45_000, 4_500, 450]
    assert [k_for_p(p, 49_500_000) for _, p in parse_top("0.1,0.01,0.001")] == [49_500, 4_950, 495]
    assert k_for_p(parse_top("0.07")[0][1], 10_000) == 7  # through a float: ceil(7.000000000000001) = 8
    assert k_for_p(parse_top("0.1")[0][1], 12) == 1  # ceil keeps k ≥ 1
    for bad in ("abc", "0", "150", "", "-1", "nan", "inf", "1/3"):
        with pytest.raises(PllbenchError):
            parse_top(bad)
    assert parse_thresholds("0.5,0.9") == [0.9, 0.5]
    with pytest.raises(PllbenchError):
        parse_thresholds("high")


@pytest.fixture(scope="module")
def random_problem():
    """N = 2,000 random float64 features in 7 classes and the brute-force ranking of all their pairs."""
    gen = torch.Generator().manual_seed(0)
    feats = l2_normalize(torch.randn(2000, 16, generator=gen, dtype=torch.float64))
    labels = torch.randint(0, 7, (2000,), generator=gen)
    return feats, labels, brute_force(feats, labels, 10**9)


@pytest.mark.parametrize("blocks", [(4096, 4096), (128, 128), (100, 333), (777, 50)])
def test_equals_brute_force(blocks, random_problem):
    feats, labels, (s, i, j) = random_problem
    k = 700
    top = top_cross_class_pairs(feats, labels, k, [0.5, 0.8], *blocks)
    assert np.array_equal(top.rows.numpy(), i[:k]) and np.array_equal(top.cols.numpy(), j[:k])
    assert np.allclose(top.scores.numpy(), s[:k], atol=1e-13, rtol=0)
    assert top.counts == {0.5: int((s > 0.5).sum()), 0.8: int((s > 0.8).sum())}


@pytest.mark.parametrize("blocks", [(4096, 4096), (7, 7), (16, 5), (3, 64)])
def test_ties_break_by_index(blocks):
    """Duplicated unit features with dyadic entries: every dot product is exact, so ties are real."""
    gen = torch.Generator().manual_seed(1)
    signs = torch.tensor([[1 if (m >> b) & 1 else -1 for b in range(4)] for m in range(16)], dtype=torch.float64)
    feats = l2_normalize(0.5 * signs[torch.randint(0, 16, (300,), generator=gen)])
    labels = torch.randint(0, 3, (300,), generator=gen)
    for k in (1, 37, 500, 4000):
        top = top_cross_class_pairs(feats, labels, k, [0.0], *blocks)
        s, i, j = brute_force(feats, labels, k)
        assert np.array_equal(top.rows.numpy(), i) and np.array_equal(top.cols.numpy(), j)
        assert np.array_equal(top.scores.numpy(), s)
    assert float(top.scores[0]) == 1.0 and len(np.unique(top.scores.numpy())) <= 5


@pytest.fixture(scope="module")
def duplicated_problem():
    """float32 features where most rows have exact duplicates: equal scores that BLAS products of different block
    shapes round apart by an ulp."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(500, 37, generator=gen)
    feats = l2_normalize(base[torch.randint(0, 500, (1200,), generator=gen)])
    labels = torch.randint(0, 5, (1200,), generator=gen)
    return feats, labels, brute_force(feats, labels, 10**9)


@pytest.mark.parametrize("blocks", [(4096, 4096), (128, 256), (256, 128), (100, 333), (333, 100), (1, 1200),
                                    (1200, 1), (7, 64)])
def test_duplicates_give_the_same_pairs_for_every_block_shape(blocks, duplicated_problem):
    feats, labels, (s, i, j) = duplicated_problem
    for k in (1, 300, 2000):
        top = top_cross_class_pairs(feats, labels, k, [0.3, float(s[0])], *blocks)
        assert np.array_equal(top.rows.numpy(), i[:k]) and np.array_equal(top.cols.numpy(), j[:k])
        assert np.array_equal(top.scores.numpy(), s[:k])
        assert top.counts == {0.3: int((s > 0.3).sum()), float(s[0]): 0}


def test_canonical_scores_are_exact_for_float32():
    feats = torch.tensor([[0.5, 0.25, -1.0], [2.0, 4.0, 0.125]])
    assert canonical_scores(feats, torch.tensor([0]), torch.tensor([1])).tolist() == [1.0 + 1.0 - 0.125]


def test_float32_and_input_checks():
    feats = l2_normalize(TOY_FEATURES).float()
    top = top_cross_class_pairs(feats, TOY_LABELS, 12, [0.9], 2, 2)
    assert top.scores.dtype == torch.float32 and top.counts == {0.9: 1}
    assert list(zip(top.rows.tolist(), top.cols.tolist())) == [(i, j) for i, j, _, _ in TOY_RANKING]
    with pytest.raises(PllbenchError):
        top_cross_class_pairs(feats.clone().fill_(float("nan")), TOY_LABELS, 3)
    with pytest.raises(PllbenchError):
        top_cross_class_pairs(feats, TOY_LABELS[:5], 3)


def test_subsets_are_cached(tmp_path):
    calls = []

    def features(images):
        calls.append(len(images))
        return TOY_FEATURES.float()

    extractor = Extractor("toy", {"name": "toy"}, features)
    args = (tmp_path, {"name": "toy", "options": {}}, "test", np.arange(6), TOY_LABELS, torch.zeros(6, 1, 2, 2),
            extractor, parse_top("10,20"), [0.9])
    first = get_subsets(*args, device=torch.device("cpu"), echo=lambda *_: None)
    second = get_subsets(*args, device=torch.device("cpu"), echo=lambda *_: None)
    assert calls == [6] and first.path == second.path
    assert first.summary["top"]["20"] == {"p": "20", "pairs": 3, "threshold": pytest.approx(11 / math.sqrt(221)),
                                          "instances": 4, "class_pairs_top5": [
                                              {"pair": [0, 1], "count": 2}, {"pair": [0, 2], "count": 1}]}
    assert first.summary["threshold_counts"] == {"0.9": 1}
    assert first.instances("10").tolist() == [0, 1, 2, 4]
    other = get_subsets(*args[:-2], parse_top("10"), [0.9], device=torch.device("cpu"), echo=lambda *_: None)
    assert other.path != first.path and calls == [6, 6]


def test_cli_scores_a_smoke_run(smoke_cache, tmp_path, capsys):
    final, run_dir, _ = smoke_run("proden", smoke_cache, tmp_path / "runs", val_fraction=0.25)
    base = ["entangle", "--dataset", "synthetic", "--preset", "smoke", "--cache-dir", str(smoke_cache),
            "--runs", str(tmp_path / "runs"), "--device", "cpu"]
    assert main(base + ["--top", "10,1", "--threshold", "0.9", "--plots", str(tmp_path / "plots"),
                        "--tsne-points", "40"]) == 0
    out = capsys.readouterr().out
    assert "| top p (%) | pairs | threshold | instances |" in out and "n(s > 0.9) = " in out
    assert "| run | method | seed | acc (%) | acc@10% (%) | acc@1% (%) | CD |" in out
    row = next(line for line in out.splitlines() if line.startswith(f"| {run_dir.name} |"))
    assert f"| {100 * final['test_acc']:.2f} |" in row
    record = json.loads((run_dir / "entangle.json").read_text())
    entry = record["subsets"]["test/teacher"]
    assert record["overall_acc"] == pytest.approx(final["test_acc"])
    assert entry["top"]["10"]["pairs"] == math.ceil(0.1 * entry["cross_class_pairs"])
    assert 0 <= entry["top"]["1"]["subset_acc"] <= 1 and record["center_distance"] > 0
    assert set(entry["top"]["10"]["selected"]) == {"select-cr", "select-aa"}
    assert {p.name.split("-")[0] for p in (tmp_path / "plots").iterdir()} == {"accuracy_vs_top", "confusion",
                                                                               "tsne"}
    assert main(base + ["--top", "10", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "mutual@10% (%)" in out and "any all (%)" in out
    sharing = json.loads((run_dir / "entangle.json").read_text())["subsets"]["train/teacher"]["sharing"]
    assert 0 <= sharing["top"]["10"]["mutual"] <= sharing["top"]["10"]["any"] <= 1
    assert main(base + ["--top", "10", "--extractor", f"ckpt:{run_dir}"]) == 0
    assert f"extractor ckpt:synthetic-smoke/{run_dir.name};" in capsys.readouterr().out


def test_cli_does_not_score_a_run_twice(smoke_cache, tmp_path, capsys, monkeypatch):
    """A run whose entangle.json holds this analysis of the same subsets is reused (its model is not loaded);
    other subsets, plots that need its features, and --rescore score it again."""
    import pllbench.entangle.report as report

    _, run_dir, _ = smoke_run("proden", smoke_cache, tmp_path / "runs")
    base = ["entangle", "--dataset", "synthetic", "--preset", "smoke", "--cache-dir", str(smoke_cache),
            "--runs", str(tmp_path / "runs"), "--device", "cpu", "--top", "10", "--tsne-points", "0"]
    (run_dir / "entangle.json").write_text('{"subsets": "written by something else"}')  # replaced, not a crash
    assert main(base) == 0
    first = json.loads((run_dir / "entangle.json").read_text())
    assert len(first["subsets"]["test/teacher"]["run_manifest"]) == 64
    loads = []
    real_load = report.load_run_method
    monkeypatch.setattr(report, "load_run_method", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    capsys.readouterr()
    assert main(base) == 0
    captured = capsys.readouterr()
    assert loads == [] and "1 of 1 run already had this analysis" in captured.err
    assert f"| {run_dir.name} |" in captured.out and json.loads((run_dir / "entangle.json").read_text()) == first
    assert main(base + ["--rescore"]) == 0 and loads == [run_dir]
    assert main(base[:-4] + ["--top", "20", "--tsne-points", "0"]) == 0 and len(loads) == 2
    assert main(base[:-2] + ["--plots", str(tmp_path / "plots"), "--tsne-points", "40"]) == 0 and len(loads) == 3
    assert "already had" not in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--top", "abc"], "malformed --top"), (["--top", "0"], "greater than 0"), (["--top", "150"], "at most 100"),
    (["--extractor", "resnet"], "unknown --extractor"), (["--extractor", "ckpt:/nonexistent"], "not a pllbench run"),
])
def test_cli_rejects_bad_input(args, message, smoke_cache, capsys):
    code = main(["entangle", "--dataset", "synthetic", "--preset", "smoke", "--cache-dir", str(smoke_cache),
                 "--device", "cpu"] + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_timm_weights_map_by_position(tmp_path):
    """A weights file whose key names differ from timm's loads by position and shape."""
    timm = pytest.importorskip("timm")
    from pllbench.entangle.extractors import timm_eval_transform, timm_extractor

    torch.manual_seed(0)
    reference = timm.create_model("test_efficientnet", pretrained=False).eval()
    renamed = {f"net.{n}": v for n, v in enumerate(reference.state_dict().values())}
    torch.save(renamed, tmp_path / "weights.pt")
    extractor = timm_extractor(f"test_efficientnet@{tmp_path / 'weights.pt'}", torch.device("cpu"))
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    x = timm_eval_transform(timm.data.resolve_data_config({}, model=reference))(images)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
    assert torch.allclose(extractor.features(images), expected, atol=1e-5)
    torch.save(dict(list(renamed.items())[:-1]), tmp_path / "short.pt")
    with pytest.raises(PllbenchError, match="matched by position"):
        timm_extractor(f"test_efficientnet@{tmp_path / 'short.pt'}", torch.device("cpu"))


def test_entangle_on_unreadable_predictions_fails_and_removes_the_stale_analysis(capsys, smoke_cache, tmp_path):
    runs, run_dir, _ = finished_world(smoke_cache, tmp_path)
    entangle = ["entangle", "--dataset", DATA, "--preset", "smoke", "--top", "10", "--tsne-points", "0", "--device",
                "cpu", "--cache-dir", str(smoke_cache), "--runs", str(runs)]
    assert main(entangle) == 0
    assert (run_dir / "entangle.json").is_file()
    parquet = run_dir / "predictions.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    capsys.readouterr()
    assert main(entangle) == 2
    err = capsys.readouterr().err
    assert "predictions.parquet" in err and "its old entangle.json was removed" in err
    assert err.strip().splitlines()[-1].startswith("error: 1 finished run could not be scored")
    assert not (run_dir / "entangle.json").exists()
