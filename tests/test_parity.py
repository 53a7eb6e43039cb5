"""Issue #31: the parity tool (benchmarks/parity) runs an official training loop on a pllbench run's inputs, and
ABLE's `weight_lookup=batch_position` reads the confidence rows the official code reads.

The official repository is stood in for by a tiny fake written here, laid out as AlphaXia/ABLE is (main.py parsing
its command line on import, a namespace package utils/ with the model, losses and dataset classes), so the real
ABLE adapter drives it: the fake prints what it was fed, which the tests read back from official.log.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import smoke_run

import pllbench.methods.able as able_module
from pllbench.data.registry import DatasetInfo
from pllbench.losses import renormalize
from pllbench.method import Batch, MethodContext
from pllbench.methods.able import ABLE, able_weight_rows, able_weights
from pllbench.views.maker import ViewMaker

PARITY = Path(__file__).resolve().parents[1] / "benchmarks" / "parity"

FAKE_ABLE = {
    "main.py": """
        import argparse
        import torch
        import torch.nn.functional as F
        from utils.model import ABLE
        from utils.resnet import ABLENet
        from utils.utils_loss import ClsLoss, ConLoss
        from utils.fmnist import load_fmnist
        from utils.cifar10 import load_cifar10

        parser = argparse.ArgumentParser()
        for flag in ("--dataset", "--arch", "-lr_decay_rate"):
            parser.add_argument(flag, default="resnet18")
        for flag in ("--workers", "--num-class", "--low-dim", "--epochs", "--batch-size", "--seed"):
            parser.add_argument(flag, type=int)
        for flag in ("--temperature", "--loss_weight", "--lr", "--wd", "--momentum"):
            parser.add_argument(flag, type=float)
        parser.add_argument("--cosine", action="store_true")
        args = parser.parse_args()

        def main():
            torch.manual_seed(args.seed)
            model = ABLE(args=args, base_encoder=ABLENet)
            if torch.cuda.is_available():
                model = model.cuda()
            optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum, weight_decay=args.wd)
            loaders = {"fmnist": load_fmnist, "cifar10": load_cifar10}
            train_loader, partial_y, test_loader = loaders[args.dataset](args)
            print("seen", len(train_loader.dataset), float(partial_y.sum()), type(model.encoder).__name__)
            confidence = (partial_y / partial_y.sum(1, keepdim=True)).cuda()
            loss_cls, loss_con = ClsLoss(confidence), ConLoss(confidence)
            for epoch in range(args.epochs):
                train(args, loss_cls, loss_con, train_loader, model, optimizer)
                print("epoch", epoch, "acc", test(args, epoch, test_loader, model))

        def train(args, loss_cls, loss_con, train_loader, model, optimizer):
            model.train()
            for images_w, images_s, labels, true_labels, index in train_loader:
                x = torch.cat([images_w.cuda(), images_s.cuda()])
                outputs, features = model(args=args, images=x, is_eval=False)
                cls = loss_cls(outputs[:args.batch_size], index)
                con, new_target = loss_con(args, outputs, features, labels.cuda(), index)
                loss_cls.update_target(index, new_target)
                loss_con.update_target(index, new_target)
                optimizer.zero_grad()
                (cls + args.loss_weight * con).backward()
                optimizer.step()

        def test(args, epoch, test_loader, model):
            model.eval()
            with torch.no_grad():
                hits = [(model(args=args, img_w=x.cuda(), is_eval=True).argmax(1) == y.cuda()).float()
                        for x, y in test_loader]
            return 100 * float(torch.cat(hits).mean())
    """,
    "utils/model.py": """
        import torch.nn as nn

        class ABLE(nn.Module):
            def __init__(self, args, base_encoder):
                super().__init__()
                self.encoder = base_encoder(name=args.arch, head="mlp", feat_dim=args.low_dim,
                                            num_class=args.num_class)

            def forward(self, args, img_w=None, images=None, is_eval=False):
                if is_eval:
                    return self.encoder(img_w)[0]
                outputs, features = self.encoder(images)
                return outputs, features.view(2, args.batch_size, -1).transpose(0, 1)
    """,
    "utils/resnet.py": """
        import torch.nn as nn

        class ABLENet(nn.Module):
            def __init__(self, name, head, feat_dim, num_class):
                raise RuntimeError("the official encoder must be replaced")
    """,
    "utils/utils_loss.py": """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class ClsLoss(nn.Module):
            def __init__(self, predicted_score):
                super().__init__()
                self.predicted_score = predicted_score

            def forward(self, outputs, index):
                return -(self.predicted_score[index] * F.log_softmax(outputs, dim=1)).sum(1).mean()

            def update_target(self, batch_index, updated_confidence):
                self.predicted_score[batch_index] = updated_confidence.detach()

        class ConLoss(ClsLoss):
            def __init__(self, predicted_score):
                super().__init__(predicted_score)
                self.initial = predicted_score.clone()

            def forward(self, args, outputs, features, Y, index):
                device = torch.device("cuda")
                rows = torch.stack([self.predicted_score[i] for i in range(args.batch_size)]).to(device)
                if not hasattr(self, "probed"):
                    self.probed = True
                    print("reads own rows:", torch.equal(rows, self.initial[index]))
                weight = rows.max(dim=1).values
                loss = (weight * (features[:, 0] - features[:, 1]).pow(2).sum(1)).mean()
                target = Y * F.softmax(outputs[:args.batch_size].detach(), dim=1)
                return loss, target / target.sum(1, keepdim=True)
    """,
    "utils/fmnist.py": """
        from torch.utils.data import Dataset
        import torchvision.transforms as transforms

        def load_fmnist(args):
            raise RuntimeError("the official loader downloads the data and draws its own candidates")

        class FMNIST_Partialize(Dataset):
            def __init__(self, images, given_partial_label_matrix, true_labels):
                self.images, self.partial, self.true = images, given_partial_label_matrix, true_labels
                norm = transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
                self.weak_transform = transforms.Compose([transforms.ToPILImage(), transforms.RandomHorizontalFlip(),
                                                          transforms.Grayscale(3), transforms.ToTensor(), norm])
                self.strong_transform = transforms.Compose([
                    transforms.ToPILImage(), transforms.RandomResizedCrop(size=16, scale=(0.5, 1.0)),
                    transforms.Grayscale(3), transforms.ToTensor(), norm])

            def __len__(self):
                return len(self.true)

            def __getitem__(self, index):
                image = self.images[index]
                return (self.weak_transform(image), self.strong_transform(image), self.partial[index],
                        self.true[index], index)
    """,
    "utils/cifar10.py": """
        from .fmnist import FMNIST_Partialize as CIFAR10_Partialize

        def load_cifar10(args):
            raise RuntimeError("the official loader downloads the data and draws its own candidates")
    """,
}


def fake_official(folder: Path) -> Path:
    for name, text in FAKE_ABLE.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


@pytest.fixture(scope="module")
def parity():
    """benchmarks/parity/run.py as a module (its siblings importable, as when it runs as a script)."""
    sys.path.insert(0, str(PARITY))
    spec = importlib.util.spec_from_file_location("parity_run", PARITY / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(PARITY))


def smoke_args(repo, runs, out, cache, *extra) -> list[str]:
    return ["--method", "able", "--official", str(repo), "--dataset", "synthetic", "--preset", "smoke", "--seed", "0",
            "--runs", str(runs), "--out", str(out), "--cache-dir", str(cache), *extra]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_official_loop_trains_on_pllbench_inputs_beside_the_pllbench_run(parity, smoke_cache, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    final, run_dir, prep = smoke_run("able", smoke_cache, runs, hp={"weight_lookup": "batch_position"})
    repo = fake_official(tmp_path / "ABLE")
    assert parity.main(smoke_args(repo, runs, out, smoke_cache)) == 0
    folder = out / "synthetic-smoke" / "able-shipped-s0"
    log = (folder / "official.log").read_text()
    # pllbench's 64 train rows and candidate matrix, pllbench's encoder; the shipped code reads rows 0..B-1
    assert f"seen 64 {float(prep.candidates.matrix.sum())} SupConNet" in log
    assert "reads own rows: False" in log
    rows = lines(folder / "parity.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]
    for row in rows:  # the synthetic test split is balanced (8 per class): accuracy = mean recall
        assert row["official"]["test_acc"] == pytest.approx(sum(row["official"]["recall"]) / 4)
    assert [r["pllbench"]["test_acc"] for r in rows] == [r["test_acc"] for r in lines(run_dir / "curves.jsonl")]
    last = rows[-1]["pllbench"]
    assert last["test_acc"] == final["test_acc"] == pytest.approx(sum(last["recall"]) / 4)
    official_acc = 100 * rows[-1]["official"]["test_acc"]
    assert f"| 1 | {official_acc:.2f} | {100 * final['test_acc']:.2f} |" in (folder / "parity.md").read_text()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["finished"] and meta["pllbench_run"] == str(run_dir)
    assert {"--seed 0", "--batch-size 16", "-lr_decay_rate 0.1"} <= {" ".join(p) for p in zip(meta["argv"],
                                                                                             meta["argv"][1:])}

    # run again: the finished official run is kept, only the comparison is rewritten
    before = (folder / "official.jsonl").read_text()
    capsys.readouterr()
    assert parity.main(smoke_args(repo, runs, out, smoke_cache)) == 0
    assert "refreshing the comparison only" in capsys.readouterr().err
    assert (folder / "official.jsonl").read_text() == before


def test_the_index_fix_variant_reads_the_instances_rows_and_leaves_no_trace(parity, smoke_cache, tmp_path):
    cuda, argv = torch.Tensor.cuda, list(sys.argv)
    repo = fake_official(tmp_path / "ABLE")
    assert parity.main(smoke_args(repo, tmp_path / "runs", tmp_path / "out", smoke_cache,
                                  "--variant", "index-fix")) == 0
    folder = tmp_path / "out" / "synthetic-smoke" / "able-index-fix-s0"
    assert "reads own rows: True" in (folder / "official.log").read_text()
    assert "not found yet" in (folder / "parity.md").read_text()  # no pllbench run: said, with its command
    assert torch.Tensor.cuda is cuda and sys.argv == argv
    assert not {"main", "utils", "utils.utils_loss"} & set(sys.modules)


def test_a_bad_checkout_is_one_line(parity, tmp_path, capsys):
    common = ["--method", "able", "--out", str(tmp_path / "out")]
    assert parity.main([*common, "--official", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --official") and "no such folder" in err[0]
    (tmp_path / "empty").mkdir()
    assert parity.main([*common, "--official", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --official {tmp_path / 'empty'} is not a checkout of AlphaXia/ABLE: it has no main.py, "
                   "utils/model.py, utils/utils_loss.py, utils/resnet.py, utils/fmnist.py, utils/cifar10.py"]


# ------------------------------------------------------------------------------------------------ ABLE's lookup


def test_batch_position_lookup_reads_the_first_b_rows_by_hand():
    bank = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.4, 0.6]])
    index = torch.tensor([4, 2])
    assert able_weight_rows(bank, index, "instance").tolist() == [bank[4].tolist(), bank[2].tolist()]
    assert able_weight_rows(bank, index, "batch_position").tolist() == [bank[0].tolist(), bank[1].tolist()]
    # Y of rows 4 and 2: {1, 2}, {2}; ŷ = (1, 2): n_1 = n_2 = 1. W_ib = s_{i,ŷ_b}·Y_{i,ŷ_b}/n_{ŷ_b}
    # with the shipped rows s_0 = (.5, .5, 0), s_1 = (.2, .3, .5): W = [[.5·1, 0·1], [.3·0, .5·1]].
    cands = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    w = able_weights(able_weight_rows(bank, index, "batch_position"), cands, torch.tensor([1, 2]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    # the instances' own rows: s_4 = (0, .4, .6), s_2 = (0, 0, 1) → [[.4, .6], [0, 1]]
    w = able_weights(able_weight_rows(bank, index, "instance"), cands, torch.tensor([1, 2]))
    assert torch.allclose(w, torch.tensor([[0.4, 0.6], [0.0, 1.0]]))


@pytest.mark.parametrize("lookup", ["instance", "batch_position"])
def test_able_step_weights_read_the_rows_its_lookup_names(lookup, monkeypatch):
    cands = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    info = DatasetInfo("synthetic", 3, 3, 16, (0.5,) * 3, (0.25,) * 3, "32", ["a", "b", "c"])
    ctx = MethodContext(num_classes=3, num_train=5, candidates=cands, backbone="cnn-xs", proj_dim=8, epochs=1,
                        steps_per_epoch=1, batch_size=2, dataset="synthetic", views=ViewMaker(info))
    method = ABLE(ctx, {"tau": 0.1, "cont_weight": 1.0, "weight_lookup": lookup})
    assert torch.equal(method.bank, renormalize(cands, cands))
    seen = []
    monkeypatch.setattr(able_module, "able_weights", lambda rows, *a: seen.append(rows) or able_weights(rows, *a))
    index = torch.tensor([3, 4])
    views = {v: torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) for v in ("weak", "strong")}
    method.training_step(Batch(views, cands[index], index, 0, 0))
    want = method.bank[index] if lookup == "instance" else method.bank[:2]
    assert torch.equal(seen[0], want) and not torch.equal(method.bank[index], method.bank[:2])
