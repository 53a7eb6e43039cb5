"""The edit artifact (pllbench/cad_edits/edits.py): order, gather, resume, identity, lookup errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pllbench.artifacts import ArtifactStore
from pllbench.cad_edits.edits import (
    EditStore,
    EditWriter,
    IdentityEdits,
    build_edits,
    edit_offsets,
    edit_pairs,
    edits_key,
    open_edits,
)
from pllbench.errors import PllbenchError

CANDS = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 0]], dtype=np.uint8)


def stamp_editor(size=3):
    """Edit (i, s) = an image whose channel 0 holds i and channel 1 holds s: the row says whose edit it is."""

    def edit(instances, labels):
        out = np.zeros((len(instances), 3, size, size), dtype=np.uint8)
        out[:, 0] = instances[:, None, None]
        out[:, 1] = labels[:, None, None]
        return out

    return edit


def test_offsets_and_pairs_are_instance_major_candidates_ascending():
    assert edit_offsets(CANDS).tolist() == [0, 2, 3, 7, 8, 10]
    instances, labels = edit_pairs(CANDS)
    assert instances.tolist() == [0, 0, 1, 2, 2, 2, 2, 3, 4, 4]
    assert labels.tolist() == [0, 2, 1, 0, 1, 2, 3, 3, 1, 2]


def test_artifact_files_and_gather_follow_the_candidate_rows(tmp_path):
    key = edits_key("cafe", "stamp", seed=0, params={"size": 3})
    store = build_edits(tmp_path, key, CANDS, 3, stamp_editor(), chunk=3)
    edits = np.load(store.folder / "edits.npy", mmap_mode="r")
    assert edits.dtype == np.uint8 and edits.shape == (10, 3, 3, 3)
    offsets = np.load(store.folder / "offsets.npy")
    assert offsets.dtype == np.int64 and offsets.tolist() == [0, 2, 3, 7, 8, 10]
    meta = json.loads((store.folder / "meta.json").read_text())
    assert meta["key"] == key and meta["num_edits"] == 10 and meta["size"] == 3
    index = torch.tensor([4, 0, 2, 1])
    rows = torch.from_numpy(CANDS[index.numpy()]).float()
    images, owner, label = store.gather(index, rows)
    assert images.dtype == torch.uint8 and images.shape == (9, 3, 3, 3)
    assert owner.tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 3]
    assert label.tolist() == [1, 2, 0, 2, 0, 1, 2, 3, 1]
    assert torch.equal(images[:, 0, 0, 0].long(), index[owner]) and torch.equal(images[:, 1, 1, 1].long(), label)
    assert sorted(p.name for p in (tmp_path / "edits").iterdir()) == [store.folder.name, store.folder.name + ".lock"]


def test_interrupted_build_resumes_from_the_last_chunk(tmp_path):
    key = edits_key("cafe", "stamp", seed=0)
    calls = []

    def failing(instances, labels):
        if len(calls) == 2:
            raise RuntimeError("editor crashed")
        calls.append(len(instances))
        return stamp_editor()(instances, labels)

    with pytest.raises(RuntimeError):
        build_edits(tmp_path, key, CANDS, 3, failing, chunk=3)
    partial = next((tmp_path / "edits").glob("*.partial"))
    assert json.loads((partial / "progress.json").read_text()) == {"written": 6}
    seen = []

    def resumed(instances, labels):
        seen.extend(instances.tolist())
        return stamp_editor()(instances, labels)

    store = build_edits(tmp_path, key, CANDS, 3, resumed, chunk=3)
    assert seen == [2, 3, 4, 4]  # rows 6..9 only
    full = build_edits(tmp_path / "fresh", key, CANDS, 3, stamp_editor(), chunk=4)
    assert np.array_equal(np.asarray(store.edits), np.asarray(full.edits))
    assert not partial.exists()


def test_writer_refuses_rows_that_do_not_fit(tmp_path):
    writer = EditWriter(tmp_path, CANDS, 3)
    with pytest.raises(PllbenchError):
        writer.write(np.zeros((2, 3, 4, 4), dtype=np.uint8))
    with pytest.raises(PllbenchError):
        writer.write(np.zeros((11, 3, 3, 3), dtype=np.uint8))
    with pytest.raises(PllbenchError):
        writer.finish()


def test_identity_is_the_rgb_centre_crop_and_matches_a_stored_identity_artifact(tmp_path):
    images = torch.arange(5 * 6 * 6, dtype=torch.uint8).view(5, 1, 6, 6)
    identity = IdentityEdits(images, 4)
    assert identity.base.shape == (5, 3, 4, 4) and torch.equal(identity.base[:, 2], images[:, 0, 1:5, 1:5])
    store = build_edits(tmp_path, edits_key("cafe", "identity-stored", seed=0), CANDS, 4,
                        lambda instances, labels: identity.base[torch.from_numpy(instances)], chunk=4)
    index = torch.tensor([3, 2, 0])
    rows = torch.from_numpy(CANDS[index.numpy()]).float()
    for a, b in zip(identity.gather(index, rows), store.gather(index, rows)):
        assert torch.equal(a, b)


def _ctx(cache, candidates=CANDS, size=3):
    store = ArtifactStore(cache, "cafe", {"dataset": "synthetic", "preset": "smoke", "candidate_seed": 0})
    return SimpleNamespace(artifacts=store, dataset="synthetic", candidates=torch.from_numpy(candidates).float(),
                           views=SimpleNamespace(size=size), train_images=None)


def test_open_edits_finds_the_artifact_of_the_editor_and_checks_it(tmp_path):
    build_edits(tmp_path, edits_key("cafe", "stamp", seed=0), CANDS, 3, stamp_editor())
    assert isinstance(open_edits(_ctx(tmp_path), "stamp"), EditStore)
    other = CANDS.copy()
    other[1, 0] = 1
    with pytest.raises(PllbenchError, match="does not match the run's candidate sets"):
        open_edits(_ctx(tmp_path, other), "stamp")
    with pytest.raises(PllbenchError, match="holds 3-px edits"):
        open_edits(_ctx(tmp_path, size=4), "stamp")
    build_edits(tmp_path, edits_key("cafe", "stamp", seed=1), CANDS, 3, stamp_editor())
    with pytest.raises(PllbenchError, match="several"):
        open_edits(_ctx(tmp_path), "stamp")
    first = sorted(p for p in (tmp_path / "edits").iterdir() if p.is_dir())[0]
    assert open_edits(_ctx(tmp_path), "stamp", pin=first.name[:8]).folder == first


def test_missing_artifact_is_a_one_line_error_naming_the_augment_command(tmp_path):
    with pytest.raises(PllbenchError) as err:
        open_edits(_ctx(tmp_path), "ip2p")
    message = str(err.value)
    assert "\n" not in message
    assert "`pllbench augment --dataset synthetic --preset smoke --seed 0 --editor ip2p`" in message
