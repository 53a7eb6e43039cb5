"""`pllbench leaderboard` writes the learning curves beside the markdown board: test accuracy per epoch, the mean and
a band over seeds, one panel per method group, from each run's curves.jsonl."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pllbench.cli import main
from pllbench.leaderboard.cells import build_boards
from pllbench.leaderboard.curves import GROUPS, method_group, row_curves
from pllbench.method import method_names

# one method of each group: a reference, a classic, a mission method, an ablation
METHODS = {"oracle": "references", "proden": "classics", "dirk": "mission methods", "cad-noca": "ablations"}


def test_every_method_has_a_group():
    groups = {name: method_group(name, name == "oracle") for name in method_names()}
    assert set(groups.values()) <= set(GROUPS) and {k: groups[k] for k in METHODS} == METHODS
    assert groups["cad-cam"] == groups["dirk-ref"] == groups["pico"] == "mission methods"  # not variants: own code
    assert groups["cad-cam-noboth"] == groups["cad-norl"] == "ablations"
    assert {groups[m] for m in ("cc", "rc", "lws", "cavl")} == {"classics"}
    assert method_group("a-plugin-not-installed", False) == "mission methods"


@pytest.fixture(scope="module")
def board_folder(smoke_cache, tmp_path_factory):
    """Two seeds of one method per group, trained on the smoke preset, and their leaderboard."""
    root = tmp_path_factory.mktemp("curves")
    runs, out = root / "runs", root / "boards"
    assert main(["run", "--methods", ",".join(METHODS), "--dataset", "synthetic", "--preset", "smoke", "--seeds",
                 "0,1", "--no-progress", "--runs", str(runs), "--cache-dir", str(smoke_cache)]) == 0
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out), "--cache-dir", str(smoke_cache)]) == 0
    return runs, out


def test_the_curves_are_the_runs_mean_and_band_over_seeds(board_folder):
    runs, _ = board_folder
    (board,) = build_boards(runs)
    curves = row_curves(board)
    method = dict(zip(board.done["label"], board.done["method"]))  # cad-noca's row is cad-noca[identity] on smoke
    assert {method[label]: c["group"] for (label, _), c in curves.items()} == METHODS
    for (label, _), c in curves.items():
        seeds = [[100 * json.loads(line)["test_acc"] for line in (run / "curves.jsonl").read_text().splitlines()]
                 for run in sorted((runs / "synthetic-smoke").glob(f"{method[label]}-s*"))]
        assert len(seeds) == c["seeds"] == 2 and c["epochs"] == [1, 2]
        assert np.allclose(c["mean"], np.mean(seeds, axis=0)) and np.allclose(c["low"], np.min(seeds, axis=0))
        assert np.allclose(c["high"], np.max(seeds, axis=0))


def test_the_png_is_written_beside_the_board_and_linked(board_folder):
    _, out = board_folder
    png = out / "smoke-curves.png"
    markdown = (out / "smoke.md").read_text()
    assert "## Learning curves" in markdown and "![test accuracy per epoch](smoke-curves.png)" in markdown
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[1] > 3 * image.shape[0]  # four group panels side by side, one dataset row
    colours = {tuple(p) for p in image.reshape(-1, 3)[:: 7]}
    inked = (image.min(axis=2) < 200).mean()
    assert len(colours) > 50 and 0.02 < inked < 0.5, (len(colours), inked)  # lines, bands, text: not blank
