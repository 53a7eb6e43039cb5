"""The shared instance-dependent candidate generator (docs/spec/candidates.md): kernel, sampling, artifact, report."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifacts import load_or_build
from ..errors import PllbenchError
from ..util import derive_seed
from ..wording import percent

GEN_VERSION = "cand-v1"
CANDIDATE_SOURCES = ("id", "oracle", "uniform")
SOURCE_OPTIONS = {"id": {}, "oracle": {}, "uniform": {"q": 0.3}}  # each source's options and their defaults


def parse_source(text: str) -> tuple[str, dict]:
    """`id`, `oracle` or `uniform[:q=0.3]` → (name, options with defaults); bad input is a one-line error."""
    name, _, rest = str(text).strip().partition(":")
    if name not in CANDIDATE_SOURCES:
        raise PllbenchError(f"unknown candidate source {name!r}; choose one of: {', '.join(CANDIDATE_SOURCES)} "
                            f"(e.g. uniform:q=0.3)")
    options = dict(SOURCE_OPTIONS[name])
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if key not in options or not eq:
            valid = ", ".join(f"{k}=<number>" for k in SOURCE_OPTIONS[name]) or "none"
            raise PllbenchError(f"candidate source {name!r} has no option {item!r}; valid options: {valid}")
        try:
            options[key] = float(value)
        except ValueError:
            raise PllbenchError(f"candidate source option {key}={value!r} is not a number") from None
    if name == "uniform" and not 0.0 <= options["q"] <= 1.0:
        raise PllbenchError(f"uniform candidate probability q={options['q']!r} must be in [0, 1]")
    return name, options


def source_text(text: str) -> str:
    """The canonical spelling of a source (`uniform:q=0.3`), as run identities and boards record it."""
    name, options = parse_source(text)
    return name + "".join(f":{k}={v!r}" for k, v in sorted(options.items()))


def uniform_probs(labels: torch.Tensor, num_classes: int, q: float) -> torch.Tensor:
    """The instance-independent protocol (PRODEN, PiCO, CRDPLL): every other label enters with probability q."""
    probs = torch.full((len(labels), num_classes), float(q), dtype=torch.float64)
    probs[torch.arange(len(labels)), labels] = 1.0
    return probs


def inclusion_probs(logits: torch.Tensor, labels: torch.Tensor, rate: float) -> torch.Tensor:
    """q_ij = min(1, r·K·p̃_j) for j ≠ y with p̃ = softmax over the wrong classes (float64); q_iy = 1."""
    logits = logits.double()
    k = logits.shape[1]
    true = torch.nn.functional.one_hot(labels, k).bool()
    p_wrong = torch.softmax(logits.masked_fill(true, float("-inf")), dim=1)
    q = torch.clamp(rate * k * p_wrong, max=1.0)
    return q.masked_fill(true, 1.0)


def sample_candidates(q: torch.Tensor, labels: torch.Tensor, seed_key: tuple) -> torch.Tensor:
    """One float64 draw U for the whole N×K matrix from a CPU generator; j ∈ S iff U_ij < q_ij; y forced in."""
    gen = torch.Generator().manual_seed(derive_seed(*seed_key))
    u = torch.rand(q.shape, dtype=torch.float64, generator=gen)
    y = (u < q.cpu()).to(torch.uint8)
    y[torch.arange(len(labels)), labels.cpu()] = 1
    return y


def build_report(cands: np.ndarray, labels: np.ndarray, q: np.ndarray, teacher: dict) -> dict:
    """Every item of docs/spec/candidates.md §5 (teacher stats are computed by the caller)."""
    n, k = cands.shape
    sizes = cands.sum(axis=1).astype(np.int64)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    onehot = np.eye(k, dtype=np.int64)[labels]
    class_cand = onehot.T @ cands.astype(np.int64)  # [c, j] = #{i: y_i = c, j ∈ S_i}
    t = class_cand / np.maximum(counts, 1)[:, None]
    off = t.copy()
    np.fill_diagonal(off, 0.0)
    cooc = cands.astype(np.int64).T @ cands.astype(np.int64)
    pairs = []
    for a in range(k):
        for b in range(a + 1, k):
            denom = counts[a] + counts[b]
            if denom == 0:
                continue
            both = cands[:, a].astype(bool) & cands[:, b].astype(bool) & ((labels == a) | (labels == b))
            pairs.append((-(both.sum() / denom), a, b, int(both.sum()), int(denom)))
    pairs.sort()
    top_pairs = [{"pair": [a, b], "share": -s, "count": c, "n": d} for s, a, b, c, d in pairs[:5]]
    histogram = np.bincount(sizes, minlength=k + 1)[1:k + 1]
    return {
        "n": int(n), "num_classes": int(k),
        "teacher": teacher,
        "size": {"mean": float(sizes.mean()), "median": float(np.median(sizes)), "min": int(sizes.min()),
                 "max": int(sizes.max()), "std": float(sizes.std()), "expected_mean": float(q.sum() / n),
                 "histogram": {str(s + 1): int(c) for s, c in enumerate(histogram)},
                 "share_1": float((sizes == 1).mean()), "share_K": float((sizes == k).mean())},
        "ambiguity": {"per_class": [float(v) for v in off.max(axis=1)],
                      "false_per_class": [float(v) for v in off.sum(axis=1)],
                      "overall": float(off.max()), "T": t.round(6).tolist()},
        "cooccurrence": cooc.tolist(),
        "confused_pair": top_pairs[0] if top_pairs else None,
        "confused_pairs_top5": top_pairs,
    }


def render_report(report: dict, classes: list[str] | None = None) -> str:
    s, t, k = report["size"], report["teacher"], report["num_classes"]
    names = classes or [str(c) for c in range(k)]
    lines = [
        "# Candidate report",
        "",
        f"- instances: {report['n']}, classes: {k}, source: {report['key'].get('source', 'id')}, "
        f"rate: {report.get('rate')}",
        f"- teacher test accuracy: {percent(t['test_acc'])}; on the generation input: {percent(t['gen_acc'])}; "
        f"mean p_y: {t['mean_p_true']:.4f}",
        f"- |S|: mean {s['mean']:.3f} (expected {s['expected_mean']:.3f}), median {s['median']:g}, "
        f"min {s['min']}, max {s['max']}, std {s['std']:.3f}; |S|=1: {s['share_1']:.3%}, |S|=K: {s['share_K']:.3%}",
        f"- overall ambiguity γ: {report['ambiguity']['overall']:.3f}",
    ]
    pair = report["confused_pair"]
    if pair:
        a, b = pair["pair"]
        lines.append(f"- most-confused pair: {names[a]} / {names[b]}, sharing rate {pair['share']:.2%}")
    lines += ["", "| |S| | " + " | ".join(s["histogram"]) + " |", "|---|" + "---|" * len(s["histogram"]),
              "| count | " + " | ".join(str(v) for v in s["histogram"].values()) + " |", "",
              "| class | γ_c | false candidates |", "|---|---|---|"]
    for c in range(k):
        lines.append(f"| {names[c]} | {report['ambiguity']['per_class'][c]:.3f} | "
                     f"{report['ambiguity']['false_per_class'][c]:.3f} |")
    cooc = np.array(report["cooccurrence"])
    lines += ["", "Co-occurrence C[a,b] = #{i: a, b ∈ S_i}:", ""]
    if k <= 10:
        lines += ["| | " + " | ".join(str(c) for c in range(k)) + " |", "|---|" + "---|" * k]
        lines += [f"| {a} | " + " | ".join(str(v) for v in cooc[a]) + " |" for a in range(k)]
    else:
        upper = [(cooc[a, b], a, b) for a in range(k) for b in range(a + 1, k)]
        for v, a, b in sorted(upper, reverse=True)[:20]:
            lines.append(f"- {names[a]} / {names[b]}: {v}")
    return "\n".join(lines) + "\n"


@dataclass
class CandidateSet:
    matrix: np.ndarray  # uint8 N×K
    path: Path
    hash: str
    report: dict


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def get_candidates(cache: Path, *, dataset: dict, train_spec: dict, teacher_key_hash: str, teacher_sha: str,
                   teacher_mode: str, rate: float, seed: int, logits_fn, labels: torch.Tensor, teacher_stats_fn,
                   gen_batch: int | None = None, classes=None, source: str = "id") -> CandidateSet:
    """Load or build the candidate artifact. `logits_fn()` gives the teacher logits on the train rows.

    `source`: "id" (the instance-dependent generator), "oracle" (the reference row: every set is {y}, i.e. the
    same generator at rate 0) or "uniform:q=…" (instance-independent: each other label with probability q, keyed
    without the teacher, which only fills the report). The true labels stay inside the generator; methods see only
    the matrix.
    """
    name, options = parse_source(source)
    if name == "oracle":
        rate = 0.0
    key = {"kind": "candidates", "dataset": dataset, "train": train_spec, "teacher": teacher_key_hash,
           "teacher_sha256": teacher_sha, "teacher_mode": teacher_mode,
           "gen_batch": gen_batch if teacher_mode == "train" else None, "rate": float(rate), "seed": int(seed),
           "version": GEN_VERSION}
    if name == "uniform":
        key = {"kind": "candidates", "dataset": dataset, "train": train_spec, "rate": options["q"], "seed": int(seed),
               "version": GEN_VERSION}
    if name != "id":  # keeps the hashes of every ID candidate set made before sources existed
        key["source"] = source_text(source)

    def build(tmp: Path) -> dict:
        start = time.time()
        logits = logits_fn().float()
        if name == "uniform":
            q = uniform_probs(labels, logits.shape[1], options["q"])
            cands = sample_candidates(q, labels, ("candidates-uniform", dataset["name"], seed)).numpy()
        else:
            q = inclusion_probs(logits, labels, rate)
            cands = sample_candidates(q, labels, ("candidates", dataset["name"], seed)).numpy()
        teacher = teacher_stats_fn(logits)
        report = build_report(cands, labels.numpy(), q.numpy(), teacher)
        report.update({"rate": options["q"] if name == "uniform" else rate, "seed": seed, "key": key,
                       "seconds": round(time.time() - start, 3)})
        (tmp / "candidates.npy").write_bytes(_npy_bytes(cands))
        (tmp / "teacher_logits.npy").write_bytes(_npy_bytes(logits.numpy()))
        (tmp / "cooccurrence.npy").write_bytes(_npy_bytes(np.array(report["cooccurrence"], dtype=np.int64)))
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        (tmp / "report.md").write_text(render_report(report, classes))
        return {}

    path, meta = load_or_build(cache, "candidates", key, build)
    matrix = np.load(path / "candidates.npy", allow_pickle=False)
    if matrix.dtype != np.uint8 or matrix.ndim != 2 or matrix.shape[0] != train_spec["n"]:
        raise PllbenchError(f"candidate artifact {path} has a wrong shape or dtype; delete it to rebuild")
    return CandidateSet(matrix, path, meta["hash"], json.loads((path / "report.json").read_text()))
