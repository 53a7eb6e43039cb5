"""View families as data (docs/spec/protocols.md §3): how the views of a dataset are drawn, named by
`DatasetInfo.view_family`.

`pllbench/views/maker.py` (`ViewMaker`) and the candidate teacher (`pllbench/data/teacher.py`) read these fields;
neither knows a family by name. A dataset whose images need another recipe registers a `ViewFamily` in its own file.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PllbenchError

# The candidate teacher's train augmentations (docs/spec/candidates.md §3), the `augment` of a teacher recipe.
TEACHER_AUGMENTS = ("none", "flip-crop", "rrc-flip-jitter")


@dataclass(frozen=True)
class ViewFamily:
    """The recipes of the cls, weak and strong views of one family (the base view is a centre crop everywhere).

    cls: `cls_crop` "pad" = flip, then a reflect-padded random crop; "rrc" = random resized crop, then flip; then
    AutoAugment with `cls_policy` (torchvision's "CIFAR10" / "IMAGENET"; None: none); then, when `cls_cutout`, a
    zero square of `cutout` px (a preset's `cls_cutout` replaces the side; 0 turns it off).
    weak: random resized crop (`crop_scale`) and flip, then colour jitter and random grayscale when `colour`.
    strong: the same crop and flip, then RandAugment and random erasing when `colour`, else jitter and grayscale.
    `pad` and `cutout` are in pixels at side `reference_side` and scale with the input side (None: fixed).
    `teacher_pad_mode` pads the teacher's flip-crop ("reflect" or "constant").
    """

    name: str
    cls_crop: str
    cls_policy: str | None
    cls_cutout: bool
    crop_scale: tuple[float, float]
    colour: bool
    teacher_pad_mode: str
    pad: int = 4
    cutout: int = 16
    reference_side: int | None = None

    def __post_init__(self):
        if self.cls_crop not in ("pad", "rrc") or self.teacher_pad_mode not in ("reflect", "constant"):
            raise PllbenchError(f"view family {self.name!r}: cls_crop must be 'pad' or 'rrc' and teacher_pad_mode "
                                f"'reflect' or 'constant'")

    def pad_at(self, side: int) -> int:
        return self.pad if self.reference_side is None else max(1, round(self.pad * side / self.reference_side))

    def cutout_at(self, side: int) -> int:
        return self.cutout if self.reference_side is None else round(self.cutout * side / self.reference_side)


_FAMILIES: dict[str, ViewFamily] = {}


def register_view_family(family: ViewFamily) -> ViewFamily:
    """Make `family` available to `DatasetInfo(view_family=family.name)`; a name is registered once."""
    if _FAMILIES.get(family.name, family) != family:
        raise PllbenchError(f"view family {family.name!r} registered twice with different recipes")
    _FAMILIES[family.name] = family
    return family


def view_family(name: str) -> ViewFamily:
    if name not in _FAMILIES:
        raise PllbenchError(f"unknown view family {name!r}; known: {', '.join(_FAMILIES)} (a dataset file may "
                            f"register another with pllbench.views.families.register_view_family)")
    return _FAMILIES[name]


def view_family_names() -> list[str]:
    return list(_FAMILIES)


# 28 px gray (Fashion-MNIST): no colour ops; pad 4 and a 16-px cutout at any side.
register_view_family(ViewFamily("28", cls_crop="pad", cls_policy=None, cls_cutout=True, crop_scale=(0.2, 1.0),
                                colour=False, teacher_pad_mode="constant"))
# 32 px colour (CIFAR): AutoAugment CIFAR10; pad 4 and cutout 16 at 32 px, scaled with the side (16 px: 2 and 8).
register_view_family(ViewFamily("32", cls_crop="pad", cls_policy="CIFAR10", cls_cutout=True, crop_scale=(0.2, 1.0),
                                colour=True, teacher_pad_mode="reflect", reference_side=32))
# 224 px colour (Flowers, Pets): random resized crops from 8 % of the image, AutoAugment IMAGENET, no cutout.
register_view_family(ViewFamily("224", cls_crop="rrc", cls_policy="IMAGENET", cls_cutout=False,
                                crop_scale=(0.08, 1.0), colour=True, teacher_pad_mode="constant"))
