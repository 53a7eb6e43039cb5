"""Oxford-IIIT Pet (37 breeds) in torchvision's layout: `oxford-iiit-pet/{images/, annotations/*.txt}`."""

from __future__ import annotations

from pathlib import Path

import torch

from pllbench.dataset import (
    Dataset,
    DatasetInfo,
    Split,
    corrupt_file_error,
    decode_square,
    missing_dataset_error,
    register_dataset,
    torchvision_download,
)
from pllbench.util import cache_root

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@register_dataset("pets")
class OxfordPets(Dataset):
    presets = ("paper", "smoke")  # smoke: the tests of its loader and error messages
    rate = 0.1
    teachers = {"paper": {"arch": "wrn50-2", "epochs": 200, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                          "augment": "rrc-flip-jitter", "label_smoothing": 0.1}}
    preset_settings = {"paper": {"backbone": "resnet34c", "batch_size": 16}}
    paper_column = 4
    _classes: list[str] = []

    def info(self) -> DatasetInfo:
        return DatasetInfo("pets", 37, 3, 224, *IMAGENET, "224", list(self._classes))

    def load(self, root: Path | None, download: bool) -> tuple[Split, Split]:
        if root is None:
            raise missing_dataset_error("pets", [])
        base = root / "oxford-iiit-pet"
        if download:
            torchvision_download("pets", "OxfordIIITPet", root, split="trainval")
        if not all((base / p).exists() for p in ("images", "annotations/trainval.txt", "annotations/test.txt")):
            raise missing_dataset_error("pets", [base])
        splits, names = [], {}
        for split in ("trainval", "test"):
            ids, labels = [], []
            for line in (base / "annotations" / f"{split}.txt").read_text().splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                try:
                    image_id, label = line.split()[:2]
                    labels.append(int(label) - 1)
                except ValueError:
                    raise corrupt_file_error(base / "annotations" / f"{split}.txt", f"bad line {line!r}") from None
                ids.append(image_id)
                names[labels[-1]] = " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))
            cache = cache_root() / "decoded" / f"pets-{split}-{len(ids)}.npy"
            images = decode_square([base / "images" / f"{i}.jpg" for i in ids], cache_file=cache)
            splits.append(Split(images, torch.tensor(labels, dtype=torch.long)))
        self._classes = [names[c] for c in sorted(names)]
        return splits[0], splits[1]
