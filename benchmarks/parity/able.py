"""Parity adapter for ABLE: the official training loop of AlphaXia/ABLE (main.py) on a pllbench run's inputs.

The official `main()` runs as checked out: its seeding (random, numpy, torch ← --seed), model wrapper
(utils/model.py), SGD, epoch-level cosine (utils_algo.adjust_learning_rate), per-image PIL views (the dataset class
of utils/<dataset>.py), losses and bank updates (utils_loss.ClsLoss / ConLoss) and train loop. What is replaced is
listed in CHANGES (and, per variant, in VARIANTS); the official command line that stands for the pllbench run's
settings is `official_argv`.

Known differences that stay (the official code's own, reported in docs/parity.md): the views are per-image PIL
transforms with the official normalisation (MNIST's 0.1307/0.3081 for Fashion-MNIST), the weak and strong views are
forwarded as one 2B batch as in pllbench, the cosine is stepped per epoch (pllbench's quick preset: per step), and
the network starts from the official seeding, not pllbench's.
"""

from __future__ import annotations

import torch
from harness import Change, Session, TorchOnDevice, Variant, deterministic_view
from torch.utils.data import DataLoader, TensorDataset

from pllbench.errors import PllbenchError

REPO = "AlphaXia/ABLE"
PLLBENCH_METHOD = "able"
REQUIRED_FILES = ("main.py", "utils/model.py", "utils/utils_loss.py", "utils/resnet.py", "utils/fmnist.py",
                  "utils/cifar10.py")
MODULES = ("main", "utils.utils_loss", "utils.fmnist", "utils.cifar10")  # main.py parses its command line on import

# pllbench dataset → the official pipeline it runs through; synthetic (smoke checks only) takes Fashion-MNIST's
OFFICIAL_DATASET = {"fmnist": "fmnist", "cifar10": "cifar10", "synthetic": "fmnist"}
DATASET_CLASS = {"fmnist": ("utils.fmnist", "FMNIST_Partialize"), "cifar10": ("utils.cifar10", "CIFAR10_Partialize")}
# load_<dataset>'s test_transform is a local of that function: it is the deterministic steps of the dataset class's
# weak pipeline (Fashion-MNIST: Grayscale(3), ToTensor, Normalize; CIFAR-10: ToTensor, Normalize)
TEST_STEPS = ("ToPILImage", "Grayscale", "ToTensor", "Normalize")

CHANGES = (
    Change("main:load_{dataset}", "pllbench_data",
           "data: pllbench's train/test split and candidate matrix (no download, no official candidate generator) "
           "through the official dataset class (its per-image views) and DataLoader arguments"),
    Change("main:ABLENet", "pllbench_encoder",
           "encoder: pllbench's preset backbone (e.g. cnn-m2) + fc + the same MLP head (Linear-ReLU-Linear, "
           "L2-normalised), in place of ResNet-18"),
    Change("main:test", "recording_test",
           "test: the official eval forward on pllbench's test split, recording each epoch's predictions; returns "
           "the same top-1 %"),
    Change("torch:Tensor.cuda", "tensor_to_device", "device: a tensor's .cuda() moves it to the run's device"),
    Change("main:torch", "torch_on_device", "device: main.py's torch.cuda.is_available() answers for the run's device"),
    Change("utils.utils_loss:torch", "torch_on_device", "device: ConLoss's torch.device('cuda') is the run's device"),
)
INDEX_FIX = Change("utils.utils_loss:ConLoss.forward", "read_instance_rows",
                   "the index fix: the contrastive weights read the batch's own confidence rows "
                   "(predicted_score[index]) instead of rows 0..B-1")
VARIANTS = {
    "shipped": Variant("the official code as shipped: the contrastive weights read bank rows 0..B-1",
                       pllbench_hp={"weight_lookup": "batch_position"}),
    "index-fix": Variant("the official code with only the contrastive-weight index fixed", changes=(INDEX_FIX,)),
}


def official_dataset(dataset: str) -> str:
    if dataset not in OFFICIAL_DATASET:
        raise PllbenchError(f"the official ABLE code has no pipeline for dataset {dataset!r}; it runs "
                            f"{', '.join(sorted(OFFICIAL_DATASET))}")
    return OFFICIAL_DATASET[dataset]


def official_argv(inputs, official: str) -> list[str]:
    """main.py's command line for the pllbench run's settings (official flag → value)."""
    cfg, hp = inputs.run.preset, inputs.run.hparams
    args = {
        "--dataset": official, "--workers": 0, "--num-class": len(inputs.classes), "--low-dim": cfg["proj_dim"],
        "--temperature": hp["tau"], "--loss_weight": hp["cont_weight"], "--epochs": cfg["epochs"],
        "--batch-size": cfg["batch_size"], "--lr": cfg["lr"], "--wd": cfg["weight_decay"],
        "--momentum": cfg["momentum"], "--seed": inputs.run.seed,
        # the official cosine ends at lr·rate³: the rate that ends it at the preset's eta_min
        "-lr_decay_rate": float(f"{(cfg['eta_min'] / cfg['lr']) ** (1 / 3):.12g}"),
    }
    return [*(text for flag, value in args.items() for text in (flag, str(value))), "--cosine"]


def train(session: Session) -> None:
    session.modules["main"].main()


# ------------------------------------------------------------------------------------------------ replacements


def pllbench_data(session: Session, original):
    """load_<dataset>(args) → (train loader, candidate matrix, test loader) on the pllbench run's split."""
    inputs = session.inputs
    module, name = DATASET_CLASS[session.dataset]
    dataset_class = getattr(session.modules[module], name)

    def load(args):
        train = dataset_class(inputs.train_images, inputs.candidates.clone(), inputs.train_labels.float())
        loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                            pin_memory=inputs.device.type == "cuda", drop_last=True)
        test = TensorDataset(deterministic_view(train.weak_transform, TEST_STEPS, inputs.test_images),
                             inputs.test_labels)
        return loader, inputs.candidates.clone(), DataLoader(test, batch_size=args.batch_size * 4, shuffle=False)

    return load


def pllbench_encoder(session: Session, original):
    """ABLENet(name, head, feat_dim, num_class) → pllbench's SupConNet for the preset's backbone."""

    def build(name="resnet18", head="mlp", feat_dim=128, num_class=10):
        if head != "mlp":
            raise PllbenchError(f"the official model asked for a {head!r} head; pllbench's SupConNet has the mlp one")
        return session.inputs.encoder(num_class, feat_dim)

    return build


def recording_test(session: Session, original):
    device = session.inputs.device

    def test(args, epoch, test_loader, model):
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(args=args, img_w=images.to(device), is_eval=True).argmax(1).cpu()
                              for images, _ in test_loader])
        return 100 * session.recorder.add(epoch, pred)

    return test


def tensor_to_device(session: Session, original):
    device = session.inputs.device

    def cuda(self, *args, **kwargs):
        return self.to(device)

    return cuda


def torch_on_device(session: Session, original):
    return TorchOnDevice(session.inputs.device)


def read_instance_rows(session: Session, original):
    """ConLoss.forward reading predicted_score[index] where it reads predicted_score[position in the batch]: the
    bank is swapped for the batch's own rows during the call (its updates go through update_target, not here)."""

    def forward(self, args, outputs, features, Y, index):
        bank = self.predicted_score
        self.predicted_score = bank[index]
        try:
            return original(self, args, outputs, features, Y, index)
        finally:
            self.predicted_score = bank

    return forward
