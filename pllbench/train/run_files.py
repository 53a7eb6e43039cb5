"""A run folder's files as the trainer writes and reads them: checkpoints (with their checksum in progress.json),
curves.jsonl, predictions.parquet; every write atomic."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import PllbenchError
from ..util import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_bytes


def torch_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def save_checkpoint(run_dir: Path, epoch: int, state: dict) -> None:
    """checkpoint-<epoch>.pt, then progress.json naming it with its checksum, then drop older checkpoints."""
    data = torch_bytes(state)
    name = f"checkpoint-{epoch:04d}.pt"
    atomic_write_bytes(run_dir / name, data)
    atomic_write_json(run_dir / "progress.json", {"epoch": epoch, "checkpoint": name, "sha256": sha256_bytes(data)})
    for old in run_dir.glob("checkpoint-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)


def write_curves(run_dir: Path, curves: list[dict]) -> None:
    atomic_write_text(run_dir / "curves.jsonl", "".join(json.dumps(r) + "\n" for r in curves))


def load_checkpoint(run_dir: Path) -> dict | None:
    progress = run_dir / "progress.json"
    if not progress.exists():
        return None
    try:
        info = json.loads(progress.read_text())
        data = (run_dir / info["checkpoint"]).read_bytes()
    except (OSError, ValueError, KeyError):
        raise PllbenchError(f"checkpoint of {run_dir} is unreadable; delete {run_dir} to restart the run") from None
    if sha256_bytes(data) != info["sha256"]:
        raise PllbenchError(f"checkpoint {run_dir / info['checkpoint']} is corrupted (checksum mismatch); "
                            f"delete {run_dir} to restart the run")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure means the same thing
        raise PllbenchError(f"checkpoint {run_dir / info['checkpoint']} cannot be loaded ({exc}); "
                            f"delete {run_dir} to restart the run") from None


def write_predictions(path: Path, rows: list[tuple[str, int, torch.Tensor]], test_index, labels) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for tag, epoch, logits in rows:
        logits = logits.float().cpu()
        n = len(logits)
        tables.append(pa.table({
            "tag": pa.array([tag] * n), "epoch": pa.array(np.full(n, epoch, dtype=np.int32)),
            "index": pa.array(np.asarray(test_index, dtype=np.int64)),
            "y_true": pa.array(labels.cpu().numpy().astype(np.int32)),
            "y_pred": pa.array(logits.argmax(1).numpy().astype(np.int32)),
            "logits": pa.array(list(logits.numpy()), type=pa.list_(pa.float32())),
        }))
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables(tables), buffer)
    atomic_write_bytes(path, buffer.getvalue().to_pybytes())
