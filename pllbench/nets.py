"""Networks: learners (cnn-xs, cnn-s, CIFAR-stem ResNets), teachers (MLP, WRN-28-10, WRN-50-2) and SupConNet.

Every backbone exposes `feature_map(x)` (the last conv map, C×h×w: the CAM/CEL input), `forward(x)` (its global
average pool) and `out_dim`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """cnn-m (32/64/128), cnn-s (16/32/64), cnn-xs (8/16/32): conv blocks, 2×2 max-pools between
    (docs/spec/protocols.md §6)."""

    def __init__(self, widths=(16, 32, 64), in_channels=3, convs_per_stage=1):
        super().__init__()
        layers, cin = [], in_channels
        for n, width in enumerate(widths):
            if n:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                layers.append(_conv_bn_relu(cin, width))
                cin = width
        self.body = nn.Sequential(*layers)
        self.out_dim = cin

    def feature_map(self, x):
        return self.body(x)

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """resnet18c / resnet34c: 3×3 stride-1 stem, no max-pool, widths 64-128-256-512 (docs/spec/methods.md §0)."""

    def __init__(self, blocks=(2, 2, 2, 2), in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for n, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            for b in range(count):
                layers.append(BasicBlock(cin, width, 2 if (n and b == 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.out_dim = 512

    def feature_map(self, x):
        return self.layers(self.stem(x))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


class MLPTeacher(nn.Module):
    """784→300→301→302→303→K: Linear (no bias) + BN1d + ReLU per hidden layer (the FMNIST paper teacher)."""

    def __init__(self, in_dim=784, hidden=(300, 301, 302, 303)):
        super().__init__()
        layers, cin = [], in_dim
        for width in hidden:
            layers += [nn.Linear(cin, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            cin = width
        self.body = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x):
        return self.body(x[:, :1].flatten(1))


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride, dropout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-depth-widen (pre-activation), e.g. WRN-28-10 with dropout 0.3: the paper's CIFAR-10 teacher."""

    def __init__(self, depth=28, widen=10, dropout=0.3, in_channels=3):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for stage, width in enumerate(widths[1:]):
            for b in range(n):
                layers.append(WideBlock(cin, width, 2 if (stage and b == 0) else 1, dropout))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.out_dim = cin

    def feature_map(self, x):
        return F.relu(self.bn(self.layers(self.stem(x))))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


class TorchvisionWRN50(nn.Module):
    """torchvision wide_resnet50_2 (ImageNet stem) without its fc."""

    def __init__(self):
        super().__init__()
        import torchvision

        net = torchvision.models.wide_resnet50_2(weights=None)
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 2048

    def feature_map(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


BACKBONES = {
    "cnn-xs": lambda: SmallCNN((8, 16, 32)),
    "cnn-s": lambda: SmallCNN((16, 32, 64)),
    "cnn-m": lambda: SmallCNN((32, 64, 128)),
    "cnn-s2": lambda: SmallCNN((16, 32, 64), convs_per_stage=2),
    "cnn-m2": lambda: SmallCNN((32, 64, 128), convs_per_stage=2),
    "resnet18c": lambda: CifarResNet((2, 2, 2, 2)),
    "resnet34c": lambda: CifarResNet((3, 4, 6, 3)),
    "mlp": MLPTeacher,
    "wrn28-10": lambda: WideResNet(28, 10, 0.3),
    "wrn50-2": TorchvisionWRN50,
}


def build_backbone(name: str) -> nn.Module:
    return BACKBONES[name]()


class Classifier(nn.Module):
    """backbone + fc."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x))

    def features(self, x):
        return self.backbone(x)


class SupConNet(Classifier):
    """backbone + fc + proj (Linear d→d, ReLU, Linear d→proj_dim, L2-normalised)."""

    def __init__(self, backbone: nn.Module, num_classes: int, proj_dim: int = 128):
        super().__init__(backbone, num_classes)
        d = backbone.out_dim
        self.proj = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))

    def forward(self, x):
        """(logits, normalised projection)."""
        h = self.backbone(x)
        return self.fc(h), F.normalize(self.proj(h), dim=1)

    def project(self, x):
        return F.normalize(self.proj(self.backbone(x)), dim=1)

    def logits(self, x):
        return self.fc(self.backbone(x))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_T ← m·θ_T + (1−m)·θ_S over parameters only (BN buffers are not averaged)."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)
