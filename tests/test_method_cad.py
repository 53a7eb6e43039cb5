"""CAD and CAD-CAM (methods/cad.py, methods/cad_cam.py): kernels on hand-computed values, forwards, end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import smoke
from conftest import smoke_run

from pllbench.artifacts import ArtifactStore
from pllbench.cad_edits.edits import build_edits, edits_key
from pllbench.cli import main
from pllbench.cli import main as cli_main
from pllbench.data.prepare import prepare
from pllbench.errors import PllbenchError
from pllbench.losses import log1m_softmax, weighted_contrastive_loss
from pllbench.method import Batch, MethodContext, get_method, resolve_hparams
from pllbench.methods.cad import class_mask, posneg_weights, weighted_penalty_loss
from pllbench.methods.cad_cam import cam_edits
from pllbench.presets import method_overrides
from pllbench.views.maker import ViewMaker

P = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
Y = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)


def test_posneg_renormalises_candidates_and_non_candidates_separately():
    w = posneg_weights(P, Y)
    assert torch.allclose(w[0], torch.tensor([5 / 7, 2 / 7, 2 / 3, 1 / 3], dtype=torch.float64))
    assert torch.allclose(w[1], P[1])  # no non-candidates: their part is 0, not NaN


def test_weighted_penalty_loss_by_hand():
    logits = P.log()
    row0_pos = -(5 / 7 * math.log(0.5) + 2 / 7 * math.log(0.2))
    row0_neg = -(2 / 3 * math.log(0.8) + 1 / 3 * math.log(0.9))
    row1 = -sum(p * math.log(p) for p in (0.4, 0.3, 0.2, 0.1))
    w = posneg_weights(P, Y)
    assert weighted_penalty_loss(logits, w, Y).item() == pytest.approx((row0_pos + row0_neg + row1) / 2, abs=1e-12)
    assert weighted_penalty_loss(logits, w, Y, penalize_noncandidates=False).item() == pytest.approx(
        (row0_pos + row1) / 2, abs=1e-12)


def test_exact_log1m_matches_the_official_epsilon_form():
    """Exact log(1 − p) vs official log(x + 1e-20) within 1e-5 whenever every p_j ∈ [1e-6, 1 − 1e-6]."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.empty(256, 6, dtype=torch.float64).uniform_(-6, 6, generator=gen),
                        torch.tensor([[13.8, 0, 0, 0, 0, 0], [-11.9, 0, 0, 0, 0, 0]], dtype=torch.float64)])
    p = torch.softmax(logits, dim=1)
    assert p.min() >= 1e-6 and p.max() <= 1 - 1e-6 and p.max() > 1 - 1e-5
    assert (log1m_softmax(logits) - torch.log(1 - p + 1e-20)).abs().max() < 1e-5
    cands = (torch.rand(logits.shape, generator=gen) < 0.4).double()
    cands[:, 0] = 1
    w = posneg_weights(p, cands)
    official = (-(w * cands * torch.log(p + 1e-20)).sum(1) - (w * (1 - cands) * torch.log(1 - p + 1e-20)).sum(1))
    assert abs(weighted_penalty_loss(logits, w, cands).item() - official.mean().item()) < 1e-5


def test_class_mask_positives_are_same_class_edits_and_never_self():
    anchors = torch.tensor([0, 1])  # two edits of one image, classes 0 and 1: hard negatives of each other
    everything = torch.tensor([0, 1, 0, 1, -1, 1])  # [q; k; queue] with an empty (-1) slot
    assert class_mask(anchors, everything).tolist() == [[0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 1]]


def test_weighted_contrastive_loss_by_hand():
    """One anchor q = (1,0); F = [q, (0,1), (−1,0)]; τ = 1, τ_d = 1: s = [0, −1, −2] after the row max."""
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    dists = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    log_z = math.log(math.exp(-1) + math.exp(-2) + 1e-12)
    ell = [None, -1 - log_z, -2 - log_z]
    one = class_mask(torch.tensor([0]), torch.tensor([0, 0, 1]))
    assert weighted_contrastive_loss(q, feats, one, dists, 1.0, 1.0).item() == pytest.approx(-ell[1] / 0.07)
    two = class_mask(torch.tensor([0]), torch.tensor([0, 0, 0]))
    w1, w2 = math.e / (math.e + 1), 1 / (math.e + 1)  # cos(D_0, D_1) = 1, cos(D_0, D_2) = 0
    expected = -(w1 * ell[1] + w2 * ell[2]) / 0.07
    assert weighted_contrastive_loss(q, feats, two, dists, 1.0, 1.0).item() == pytest.approx(expected)


def test_cam_edits_by_hand():
    fmap = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # 1 image, 1 channel, 2×2
    fc = torch.tensor([[1.0], [-1.0]])  # class 0 follows the map, class 1 is all negative
    edits = cam_edits(fmap, fc, torch.ones(1, 3, 2, 2), torch.tensor([0, 0]), torch.tensor([0, 1]), 0.2)
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]]) / (3 + 1e-8)
    assert torch.allclose(edits[0], (a + 0.2 * (1 - a)).expand(3, 2, 2))
    assert torch.allclose(edits[1], torch.full((3, 2, 2), 0.2))  # ReLU(−G) = 0: everything dimmed
    up = cam_edits(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]), fc[:1], torch.ones(1, 1, 4, 4), torch.tensor([0]),
                   torch.tensor([0]), 0.2)
    mask = torch.tensor([0.0, 0.25, 0.75, 1.0])  # bilinear 2 → 4, align_corners false
    assert torch.allclose(up[0, 0], (mask + 0.2 * (1 - mask)).expand(4, 4), atol=1e-6)


def _method_and_batch(name, cache, hp_overrides=None):
    prep = prepare("synthetic", "smoke", 0, cache=cache, device=torch.device("cpu"), echo=lambda *_: None)
    cls = get_method(name)
    hp = resolve_hparams(cls, "synthetic", method_overrides(prep.preset, cls.name, cls.family), {})
    hp.update(hp_overrides or {})
    cands = torch.from_numpy(prep.candidates.matrix).float()
    maker = ViewMaker(prep.data.info)
    ctx = MethodContext(num_classes=4, num_train=len(cands), candidates=cands, backbone="cnn-xs", proj_dim=32,
                        epochs=2, steps_per_epoch=4, batch_size=16, dataset="synthetic", views=maker,
                        train_images=prep.data.train.images,
                        artifacts=ArtifactStore(cache, prep.candidates.hash, {"preset": "smoke", "candidate_seed": 0}))
    method = cls(ctx, hp)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(16)
    batch = Batch({v: maker(ctx.train_images[idx], v, gen) for v in cls.views}, cands[idx], idx, 1, 4, gen)
    return method, batch


@pytest.mark.parametrize("name, teacher, student", [
    ("cad", ["B", "A", "A"], ["B", "A"]),
    ("cad-cam", ["B", "B", "A", "A"], ["B", "A"]),
    ("cad-norl", ["B"], ["B"]),
    ("cad-cam-norl", ["B"], ["B"]),
])
def test_forwards_per_step(name, teacher, student, smoke_cache):
    """Who forwards how many images in one step (B instances, A = Σ|S_i| edits); -norl makes no edit forward."""
    method, batch = _method_and_batch(name, smoke_cache)
    sizes = {"teacher": [], "student": []}
    for who in sizes:
        getattr(method, who).backbone.body.register_forward_hook(
            lambda _m, inputs, _out, who=who: sizes[who].append(len(inputs[0])))
    losses = method.training_step(batch)
    n_edits = int(batch.candidates.sum())
    as_sizes = {"B": 16, "A": n_edits}
    assert sizes == {"teacher": [as_sizes[s] for s in teacher], "student": [as_sizes[s] for s in student]}
    assert torch.isfinite(losses["loss"]) and ("align" in losses) == (not name.endswith("norl"))
    if not name.endswith("norl"):
        assert int(method.queue.ptr) == n_edits and method.queue.label[:n_edits].tolist() == \
            batch.candidates.nonzero()[:, 1].tolist()


def test_cad_identity_and_cad_cam_train_end_to_end(smoke_cache, tmp_path):
    final, run_dir, _ = smoke_run("cad", smoke_cache, tmp_path / "runs")
    assert final["label"] == "cad[identity]" and 0 <= final["test_acc"] <= 1
    curves = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss/align"]) and math.isfinite(r["loss/cls"]) for r in curves)
    final, _, _ = smoke_run("cad-cam", smoke_cache, tmp_path / "runs")
    assert final["label"] == "cad-cam"
    final, _, _ = smoke_run("cad-norl", smoke_cache, tmp_path / "runs", hp={"editor": "ip2p"})
    assert final["label"] == "cad-norl"  # no edits used, so no artifact needed and no editor in the label


def test_cad_trains_on_a_stored_artifact_from_a_test_editor(smoke_cache, tmp_path):
    """A per-class colour tint built through build_edits is found by its editor id and changes the run."""
    prep = prepare("synthetic", "smoke", 0, cache=smoke_cache, device=torch.device("cpu"), echo=lambda *_: None)
    images = prep.data.train.images.numpy()
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.float64)

    def tint(instances, labels):
        return np.round(0.5 * images[instances] + 0.5 * palette[labels][:, :, None, None]).astype(np.uint8)

    key = edits_key(prep.candidates.hash, "tint-test", seed=0, params={"size": 16, "mix": 0.5})
    build_edits(smoke_cache, key, prep.candidates.matrix, 16, tint)
    tinted, tinted_dir, _ = smoke_run("cad", smoke_cache, tmp_path / "runs", hp={"editor": "tint-test"})
    assert tinted["label"] == "cad[tint-test]"
    _, identity_dir, _ = smoke_run("cad", smoke_cache, tmp_path / "runs")
    a = torch.load(tinted_dir / "model.pt", weights_only=True)
    b = torch.load(identity_dir / "model.pt", weights_only=True)
    assert not torch.equal(a["queue.logit"], b["queue.logit"])


def test_more_edits_than_queue_rows_is_an_error(smoke_cache, tmp_path):
    with pytest.raises(PllbenchError, match="queue_size"):
        smoke_run("cad", smoke_cache, tmp_path / "runs", hp={"queue_size": 8})


def test_cli_without_ip2p_edits_prints_one_line(smoke_cache, tmp_path, capsys):
    code = cli_main(["run", "--methods", "cad", "--hp", "editor=ip2p", "--dataset", "synthetic", "--preset", "smoke",
                     "--no-progress", "--cache-dir", str(smoke_cache), "--runs", str(tmp_path / "runs")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert "cannot make the 'ip2p' edits here (no InstructPix2Pix weights" in errors[0]
    assert "`pllbench augment --dataset synthetic" in errors[0] and "--hp editor=identity" in errors[0]


def test_run_makes_missing_edits_on_demand(smoke_cache, tmp_path, capsys):
    """`run` builds a CAD run's stored edits through `pllbench augment`'s code when the editor's model is available
    (here the miniature pipeline, always available), as it builds candidates; a second run finds them."""
    runs = tmp_path / "runs"
    args = ["run", "--methods", "cad", "--hp", "editor=tiny-ip2p", "--dataset", "synthetic:train=16", "--preset",
            "smoke", "--epochs", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--runs", str(runs)]
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert "making the 'tiny-ip2p' edits of candidates" in err
    final = json.loads(next(runs.glob("*/cad-*/final.json")).read_text())
    assert final["label"] == "cad[tiny-ip2p]"
    assert cli_main([*args, "--seeds", "0", "--hp", "cad.align_weight=1.0"]) == 0  # another run, same candidates
    assert "making the" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cad-cam", "dirk-ref"])
def test_teacher_starts_separate_or_as_the_student(name, smoke_cache):
    """teacher_init=separate (official) draws the teacher's own weights; =student copies the student's (quick)."""
    for init, same in (("separate", False), ("student", True)):
        method, _ = _method_and_batch(name, smoke_cache, {"teacher_init": init})
        teacher, student = method.teacher.state_dict(), method.student.state_dict()
        assert teacher.keys() == student.keys()
        assert all(torch.equal(teacher[k], student[k]) for k in teacher) == same
        assert not any(p.requires_grad for p in method.teacher.parameters())


def test_identity_editor_is_announced_once_and_missing_edits_name_the_command(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cad,dirk", "--epochs", "1")) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "identity editor" in line]
    assert len(notes) == 1, err
    assert notes[0].startswith("CAD uses the identity editor (a control: no InstructPix2Pix edits)")
    assert "`pllbench augment --dataset" in notes[0] and "cad[identity]" in notes[0]
    # the paper's editor without its edits: one line, naming the command that makes them
    code = main(smoke(smoke_cache, runs, "--methods", "cad", "--epochs", "1", "--hp", "editor=ip2p"))
    captured = capsys.readouterr()
    assert code == 2
    mentions = [line for line in (captured.out + captured.err).splitlines() if "the 'ip2p' edits" in line]
    assert len(mentions) == 1 and mentions[0].startswith("error: ") and "`pllbench augment --dataset" in mentions[0]
    assert "identity editor" not in captured.err
