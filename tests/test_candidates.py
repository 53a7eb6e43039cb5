"""The candidate generator: kernel, worked K = 4 example, invariants (candidates.md §6, §7)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import smoke_run

from pllbench.data.candidates import build_report, inclusion_probs, sample_candidates


def official_steps(logits: torch.Tensor, labels: torch.Tensor, rate: float) -> torch.Tensor:
    """The official route: zero y, divide by the max, divide by the mean over K, times r, clip, force y."""
    p = torch.softmax(logits.double(), dim=1)
    p[torch.arange(len(labels)), labels] = 0
    p = p / p.max(dim=1, keepdim=True).values
    q = (p / p.mean(dim=1, keepdim=True) * rate).clamp(max=1)
    q[torch.arange(len(labels)), labels] = 1
    return q


def logits_of(p):
    return torch.log(torch.tensor([p], dtype=torch.float64))


@pytest.mark.parametrize("rate,expected", [(0.25, [0.2, 1, 0.6, 0.2]), (1.0, [0.8, 1, 1, 0.8])])
def test_example_a(rate, expected):
    q = inclusion_probs(logits_of([0.1, 0.5, 0.3, 0.1]), torch.tensor([1]), rate)
    assert torch.allclose(q, torch.tensor([expected], dtype=torch.float64), atol=1e-12)
    assert float(q.sum()) == pytest.approx({0.25: 2.0, 1.0: 3.6}[rate], abs=1e-12)


@pytest.mark.parametrize("rate,expected", [(0.25, [4 / 9, 1, 1 / 3, 2 / 9]), (1.0, [1, 1, 1, 8 / 9])])
def test_example_b(rate, expected):
    q = inclusion_probs(logits_of([0.4, 0.1, 0.3, 0.2]), torch.tensor([1]), rate)
    assert torch.allclose(q, torch.tensor([expected], dtype=torch.float64), atol=1e-12)


def test_example_draws():
    qa = inclusion_probs(logits_of([0.1, 0.5, 0.3, 0.1]), torch.tensor([1]), 0.25)
    qb = inclusion_probs(logits_of([0.4, 0.1, 0.3, 0.2]), torch.tensor([1]), 0.25)
    ua = torch.tensor([[0.15, 0.99, 0.65, 0.05]], dtype=torch.float64)
    ub = torch.tensor([[0.40, 0.99, 0.50, 0.25]], dtype=torch.float64)
    sa = ((ua < qa) | torch.tensor([[False, True, False, False]])).int()
    sb = ((ub < qb) | torch.tensor([[False, True, False, False]])).int()
    assert sa.tolist() == [[1, 1, 0, 1]] and sb.tolist() == [[1, 1, 0, 0]]
    q1a = inclusion_probs(logits_of([0.1, 0.5, 0.3, 0.1]), torch.tensor([1]), 1.0)
    assert ((ua < q1a) | (q1a == 1)).all()


def test_stable_route_equals_official_steps():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 10, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 10, (500,), generator=gen)
    for rate in (0.05, 0.3, 1.0):
        assert torch.allclose(inclusion_probs(logits, labels, rate), official_steps(logits, labels, rate),
                              atol=1e-12, rtol=0)


def test_no_nan_when_teacher_is_certain():
    logits = torch.tensor([[0.0, 800.0, 0.0, -5.0]], dtype=torch.float64)
    q = inclusion_probs(logits, torch.tensor([1]), 0.5)
    assert torch.isfinite(q).all() and q[0, 1] == 1


def test_invariants_sum_range_and_uniform():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 6, generator=gen)
    labels = torch.randint(0, 6, (300,), generator=gen)
    q = inclusion_probs(logits, labels, 0.1)
    wrong = q.masked_fill(torch.nn.functional.one_hot(labels, 6).bool(), 0)
    assert (q >= 0).all() and (q <= 1).all() and (q[torch.arange(300), labels] == 1).all()
    unclipped = (wrong < 1).all(dim=1)
    assert torch.allclose(wrong.sum(1)[unclipped], torch.full_like(wrong.sum(1)[unclipped], 0.6), atol=1e-12)
    assert (wrong.sum(1) <= 0.6 + 1e-12).all()
    uniform = inclusion_probs(torch.zeros(1, 5), torch.tensor([2]), 0.1)
    assert torch.allclose(uniform[0, [0, 1, 3, 4]], torch.full((4,), 0.5 / 4, dtype=torch.float64))
    assert sample_candidates(inclusion_probs(logits, labels, 1e-30), labels, ("t", 0)).sum() == 300


def test_sampling_is_seeded_monotone_and_forces_the_true_label():
    gen = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(400, 10, generator=gen), torch.randint(0, 10, (400,), generator=gen)
    q_lo, q_hi = inclusion_probs(logits, labels, 0.2), inclusion_probs(logits, labels, 0.8)
    key = ("candidates", "x", 0)
    a, b = sample_candidates(q_lo, labels, key), sample_candidates(q_lo, labels, key)
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, sample_candidates(q_lo, labels, ("candidates", "x", 1)))
    hi = sample_candidates(q_hi, labels, ("candidates", "x", 0))
    assert (a <= hi).all()  # S(r1) ⊆ S(r2) with U fixed
    assert (a[torch.arange(400), labels] == 1).all()


def test_frequencies_match_q():
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]], dtype=torch.float64)).repeat(20000, 1)
    labels = torch.ones(20000, dtype=torch.long)
    q = inclusion_probs(logits, labels, 0.25)
    freq = sample_candidates(q, labels, ("candidates", "freq", 0)).double().mean(0)
    for j in (0, 2, 3):
        qj = float(q[0, j])
        assert abs(float(freq[j]) - qj) < 4 * math.sqrt(qj * (1 - qj) / 20000)


def test_report_hand_count():
    cands = np.array([[1, 1, 0, 1], [1, 1, 0, 0]], dtype=np.uint8)
    labels = np.array([1, 1])
    q = np.array([[0.2, 1, 0.6, 0.2], [4 / 9, 1, 1 / 3, 2 / 9]])
    rep = build_report(cands, labels, q, teacher={})
    s = rep["size"]
    assert (s["mean"], s["median"], s["max"], s["expected_mean"]) == (2.5, 2.5, 3, pytest.approx(2.0))
    assert s["histogram"] == {"1": 0, "2": 1, "3": 1, "4": 0}
    assert rep["ambiguity"]["T"][1] == [1.0, 1.0, 0.0, 0.5]
    assert rep["ambiguity"]["per_class"][1] == 1.0
    cooc = np.array(rep["cooccurrence"])
    assert (cooc[0, 1], cooc[0, 3], cooc[1, 3], cooc[1, 1]) == (2, 1, 1, 2)
    assert rep["confused_pair"]["pair"] == [0, 1] and rep["confused_pair"]["share"] == 1.0
    assert Fraction(rep["confused_pair"]["count"], rep["confused_pair"]["n"]) == 1


def test_uniform_source_kernel_and_spelling():
    from pllbench.data.candidates import parse_source, source_text, uniform_probs
    from pllbench.errors import PllbenchError

    probs = uniform_probs(torch.tensor([2, 0]), 3, 0.25)
    assert probs.tolist() == [[0.25, 0.25, 1.0], [1.0, 0.25, 0.25]]
    labels = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(0))
    cands = sample_candidates(uniform_probs(labels, 10, 0.3), labels, ("candidates-uniform", "freq", 0)).double()
    assert bool((cands[torch.arange(20000), labels] == 1).all())
    assert abs(float(cands.sum(1).mean()) - (1 + 9 * 0.3)) < 0.03  # E|S| = 1 + (K − 1)·q
    assert source_text("uniform") == "uniform:q=0.3" and source_text("uniform:q=0.32") == "uniform:q=0.32"
    assert source_text("id") == "id" and parse_source("oracle") == ("oracle", {})
    for bad, message in [("uniform:q=2", "must be in"), ("uniform:p=0.3", "valid options: q=<number>"),
                         ("uniform:q=abc", "not a number"), ("noisy", "choose one of: id, oracle, uniform"),
                         ("id:q=0.3", "valid options: none")]:
        with pytest.raises(PllbenchError, match=message):
            parse_source(bad)


def test_uniform_candidates_are_their_own_artifact_run_and_board_column(smoke_cache, tmp_path):
    from pllbench.data.prepare import prepare
    from pllbench.errors import PllbenchError
    from pllbench.grid.jobs import GridSpec
    from pllbench.leaderboard.results import dataset_column

    cpu = torch.device("cpu")
    ident = prepare("synthetic", "smoke", 0, cache=smoke_cache, device=cpu, echo=lambda *_: None)
    uni = prepare("synthetic", "smoke", 0, cache=smoke_cache, device=cpu, echo=lambda *_: None,
                  candidate_source="uniform:q=0.5")
    assert uni.candidates.hash != ident.candidates.hash
    assert uni.candidates.report["key"]["source"] == "uniform:q=0.5" and "teacher" not in uni.candidates.report["key"]
    assert uni.candidates.report["rate"] == 0.5
    spec = GridSpec(["proden", "oracle"], ["synthetic"], [0], "smoke", candidates="uniform:q=0.5")
    proden, oracle = (job.run_config() for job in spec.jobs())
    assert proden.candidate_source == "uniform:q=0.5" and oracle.candidate_source == "oracle"
    assert GridSpec(["proden"], ["synthetic"], [0], "smoke").id != spec.id
    config = proden.with_artifacts(uni).to_json()
    assert config["candidates"]["source"] == "uniform:q=0.5"
    assert dataset_column(config) == "synthetic [uniform:q=0.5]"
    assert dataset_column(oracle.to_json()) == "synthetic"
    with pytest.raises(PllbenchError, match="are not the run's"):
        proden.with_artifacts(ident)  # a uniform run never trains on ID candidates


def test_run_with_uniform_candidates_from_the_command_line(tmp_path, capsys):
    from pllbench.cli import main

    argv = ["run", "--methods", "proden", "--dataset", "synthetic", "--preset", "smoke", "--epochs", "1",
            "--candidates", "uniform:q=0.3", "--no-progress", "--runs", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert "| proden | synthetic [uniform:q=0.3] |" in capsys.readouterr().out
    (run,) = (tmp_path / "runs" / "synthetic-smoke").iterdir()
    assert json.loads((run / "config.json").read_text())["candidates"]["source"] == "uniform:q=0.3"
    assert main(argv[:-5] + ["--candidates", "uniform:q=7", "--runs", str(tmp_path / "runs")]) == 2
    assert "uniform candidate probability q=7.0 must be in [0, 1]" in capsys.readouterr().err


def test_oracle_source_gives_the_true_labels_as_singletons(smoke_cache, tmp_path):
    final, run_dir, prep = smoke_run("oracle", smoke_cache, tmp_path / "runs")
    matrix = prep.candidates.matrix
    assert (matrix.sum(axis=1) == 1).all()
    assert np.array_equal(matrix.argmax(axis=1), prep.data.train.labels.numpy())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["candidates"]["source"] == "oracle" and config["candidates"]["mean_size"] == 1.0
    assert final["reference"] is True and final["label"] == "oracle"
    assert 0.0 <= final["teacher_test_acc"] <= 1.0
    _, id_dir, id_prep = smoke_run("proden", smoke_cache, tmp_path / "runs")
    assert id_prep.candidates.hash != prep.candidates.hash  # a separate artifact, never the ID candidates
    assert "source" not in json.loads((id_dir / "config.json").read_text())["candidates"]
