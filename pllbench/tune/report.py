"""The tuned board (`pllbench tune --report`): per method, default and tuned side by side, and the selection gap.

- Default vs tuned: the final runs (full train split, test split, final epoch) of the preset's defaults and of the
  chosen configuration on the shared final seeds; Δ = tuned − default from their predictions on the same test items,
  with the paired bootstrap CI and the sign-flip p of pllbench.stats (as the leaderboard's paired comparisons).
- Selection gap: the study's finished trials selected by the oracle criterion, each trial model's accuracy on its
  validation rows against their true labels, next to the label-free choice. The oracle is computed here, by the
  evaluator, after the study: it never reaches the sampler, and it is an upper bound, never ranked. The test
  accuracies in that table are the trial runs' own (trained without the validation rows, on the study's seed).
- Cost: the trials' compute (a run's epoch seconds x its torch threads on a CPU: core-hours; on a GPU: GPU-hours).
- One plot per study: the criterion over trials (finished, pruned at their last report, the best so far) and the
  oracle beside it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PllbenchError
from ..leaderboard.compare import FEW, FEW_SEEDS, N_BOOT, read_final_predictions
from ..stats import paired_bootstrap, sign_flip_test
from ..train.runconfig import RunConfig
from ..train.runs import read_curves, read_json, scan
from ..util import atomic_write_bytes, atomic_write_text
from .study import CRITERIA, REDUCTION_FACTOR, StudySpec, chosen_trial, final_jobs
from .trial import params_text


@dataclass
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict
    value: float | None  # the label-free criterion: final epoch (COMPLETE) or last report (PRUNED)
    run_dir: Path | None
    test_acc: float | None = None  # the trial run's final-epoch test accuracy (reporting only)
    oracle: float | None = None  # validation accuracy on the true labels (reporting only)
    compute: dict = field(default_factory=dict)  # {"core-h" or "GPU-h": hours}


def run_compute(run_dir: Path) -> dict:
    """{unit: hours} of a run folder's recorded epochs: CPU seconds x torch threads, or GPU seconds."""
    seconds = sum(float(r.get("seconds", 0.0)) for r in read_curves(run_dir))
    env = (read_json(run_dir / "config.json") or {}).get("environment") or {}
    if str(env.get("device", "cpu")).startswith("cuda"):
        return {"GPU-h": seconds / 3600}
    return {"core-h": seconds * int(env.get("threads") or 1) / 3600}


def compute_text(parts: list[dict]) -> str:
    total: dict[str, float] = {}
    for part in parts:
        for unit, hours in part.items():
            total[unit] = total.get(unit, 0.0) + hours
    return " + ".join(f"{hours:.3g} {unit}" for unit, hours in sorted(total.items())) or "—"


def trial_rows(study, trials_root: Path) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = t.user_attrs.get("run")
        run_dir = Path(trials_root) / run if run else None
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        row = TrialRow(t.number, t.state.name, dict(t.params), value, run_dir)
        if run_dir is not None and run_dir.is_dir():
            row.compute = run_compute(run_dir)
            final = read_json(run_dir / "final.json") or {}
            row.test_acc = final.get("test_acc")
        rows.append(row)
    return rows


def oracle_accuracy(run_dir: Path, cache: Path, device, data_root=None) -> float:
    """A finished trial run's final model on its validation rows, against their true labels (the evaluator's
    after-the-fact upper bound; never a selection input)."""
    from ..entangle.extractors import load_run_method
    from ..evaluate import accuracy, predict_logits
    from ..train.loop import split_rows

    method, config, data = load_run_method(run_dir, cache, device, data_root)
    _, val_rows = split_rows(len(data.train), float(config["val_fraction"]), int(config["seed"]))
    if val_rows is None:
        raise PllbenchError(f"{run_dir} has no validation split")
    logits = predict_logits(method.predict, data.train.images[val_rows].to(device), method.ctx.views)
    return float(accuracy(logits.cpu(), data.train.labels[val_rows]))


def add_oracle(rows: list[TrialRow], cache: Path, device, data_root=None) -> None:
    for row in rows:
        if row.state == "COMPLETE" and row.run_dir is not None:
            row.oracle = oracle_accuracy(row.run_dir, cache, device, data_root)


def finished_by_signature(root: Path) -> dict[str, Path]:
    """{RunConfig.signature: folder} of the finished, uncorrupted run folders under a results root."""
    out = {}
    for folder in scan(Path(root)):
        if folder.final is not None and not folder.corrupt:
            try:
                out[RunConfig.from_json(folder.config).signature] = folder.path
            except PllbenchError:
                continue
    return out


@dataclass
class FinalPair:
    seeds: list[int]
    default_acc: list[float]
    tuned_acc: list[float]
    result: object | None  # stats.PairedResult
    p_sign: float | None


def final_pair(spec: StudySpec, study, seeds: list[int], finished: dict[str, Path]) -> FinalPair:
    """Default and tuned final runs on the seeds both finished; their paired Δ when both have predictions."""
    jobs = final_jobs(spec, study, seeds)
    half = len(jobs) // 2
    defaults = {j.seed: finished.get(j.signature()) for j in jobs[:half]}
    tuned = {j.seed: finished.get(j.signature()) for j in jobs[half:]}
    shared = [s for s in seeds if defaults.get(s) is not None and tuned.get(s) is not None]
    preds = {s: (read_final_predictions(str(defaults[s])), read_final_predictions(str(tuned[s]))) for s in shared}
    preds = {s: p for s, p in preds.items() if p[0] is not None and p[1] is not None}
    pair = FinalPair(list(preds), [], [], None, None)
    if not preds:
        return pair
    common = None
    for a, b in preds.values():
        index = np.intersect1d(a.index.to_numpy(), b.index.to_numpy())
        common = index if common is None else np.intersect1d(common, index)
    correct = {s: [(f.loc[common, "y_pred"].to_numpy() == f.loc[common, "y_true"].to_numpy()) for f in pair_]
               for s, pair_ in preds.items()}
    cd = np.stack([c[0] for c in correct.values()])
    ct = np.stack([c[1] for c in correct.values()])
    pair.default_acc, pair.tuned_acc = list(100 * cd.mean(axis=1)), list(100 * ct.mean(axis=1))
    pair.result = paired_bootstrap(ct, cd, n_boot=N_BOOT, seed=0)
    pair.p_sign = sign_flip_test(100 * (ct.mean(axis=1) - cd.mean(axis=1)))
    return pair


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.2f}" if values else "—"


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def plot_study(spec: StudySpec, rows: list[TrialRow], path: Path) -> None:
    """The criterion over trials: finished trials, pruned ones at their last report, the best so far, and the
    oracle (true validation labels, after the fact) beside them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    done = [r for r in rows if r.state == "COMPLETE"]
    pruned = [r for r in rows if r.state == "PRUNED" and r.value is not None]
    ax.plot([r.number for r in done], [r.value for r in done], "o", label=f"{spec.criterion} (final epoch)")
    ax.plot([r.number for r in pruned], [r.value for r in pruned], "x", label="pruned (last report)")
    if done:
        best = np.maximum.accumulate([r.value for r in done])
        ends = [r.number for r in done] + [max(r.number for r in rows)]
        ax.step(ends, [*best, best[-1]], where="post", label="best so far")
    oracle = [r for r in done if r.oracle is not None]
    ax.plot([r.number for r in oracle], [r.oracle for r in oracle], "s", mfc="none",
            label="oracle: true val labels (not used)")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{CRITERIA[spec.criterion]} / accuracy")
    ax.set_title(spec.name, fontsize=8)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def protocol_line(specs: list[StudySpec], budget: int | None, seeds: list[int]) -> str:
    spec = specs[0]
    pruner = spec.pruner_settings()
    pruning = ("no pruning" if pruner["kind"] == "none" else
               f"{pruner['kind']} pruning from epoch {pruner['first_rung']} (factor {REDUCTION_FACTOR})")
    trials = f"{budget} trials" if budget else "trials"
    return (f"{trials} per method, {spec.sampler} sampler seeded {spec.seed}, {pruning}, over "
            f"{spec.epochs_run} epochs; selection by {CRITERIA[spec.criterion]} ({spec.criterion}) on a "
            f"candidate-only validation split of {spec.val_fraction:g} of the train rows; final runs on seeds "
            f"{','.join(map(str, seeds)) or 'none'} (full train split, final-epoch test accuracy).")


def method_rows(spec: StudySpec, study, rows: list[TrialRow], pair: FinalPair) -> tuple[list[str], list[str]]:
    """(the default-vs-tuned row, the selection-gap row) of one study."""
    best = chosen_trial(study)
    counts = {state: sum(r.state == state for r in rows) for state in ("COMPLETE", "PRUNED", "FAIL")}
    chosen = params_text(best.params) if best else "—"
    trials = f"{counts['COMPLETE']} / {counts['PRUNED']} / {counts['FAIL']}"
    if pair.result is None:
        delta = ["no shared finished final seeds", "—", "—"]
    else:
        few = f" {FEW}" if pair.result.n_seeds < FEW_SEEDS else ""
        delta = [f"{pair.result.delta:+.2f}", f"[{pair.result.ci_low:+.2f}, {pair.result.ci_high:+.2f}]{few}",
                 f"{pair.p_sign:.4f}"]
    main = [spec.method, _mean(pair.default_acc), _mean(pair.tuned_acc), *delta,
            ",".join(map(str, pair.seeds)) or "—", chosen, trials, compute_text([r.compute for r in rows])]
    done = [r for r in rows if r.state == "COMPLETE" and r.oracle is not None]
    if best is None or not done:
        return main, [spec.method, "—", "—", "—", "—", "—", "—", "—"]
    picked = next(r for r in rows if r.number == best.number)
    oracle = max(done, key=lambda r: (r.oracle, -r.number))
    gap = ("—" if picked.test_acc is None or oracle.test_acc is None
           else f"{100 * (oracle.test_acc - picked.test_acc):+.2f}")
    gap_row = [spec.method, f"{picked.number}", _acc(picked.oracle), _acc(picked.test_acc), f"{oracle.number}",
               _acc(oracle.oracle), _acc(oracle.test_acc), gap]
    return main, gap_row


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def render(studies: list[tuple[StudySpec, object]], *, runs: Path, trials_root: Path, cache: Path, device,
           seeds: list[int], budget: int | None = None, out: Path | None = None, data_root=None) -> str:
    """The tuned board as markdown; with `out`, also written there with one plot per study."""
    specs = [spec for spec, _ in studies]
    finished = finished_by_signature(runs)
    main_rows, gap_rows, plots = [], [], []
    for spec, study in studies:
        rows = trial_rows(study, trials_root)
        add_oracle(rows, cache, device, data_root)
        main, gap = method_rows(spec, study, rows, final_pair(spec, study, seeds, finished))
        main_rows.append(main)
        gap_rows.append(gap)
        if out is not None:
            plots.append((spec.method, f"tune-{spec.name}.png"))
            plot_study(spec, rows, Path(out) / plots[-1][1])
    first = specs[0]
    lines = [f"# Tuned vs default: {first.dataset}, preset {first.preset}", "",
             protocol_line(specs, budget, seeds), ""]
    lines += table(["method", "default (%)", "tuned (%)", "Δ tuned − default (points)", "95% CI", "sign-flip p",
                    "seeds", "chosen values", "trials: finished / pruned / failed", "tuning compute"], main_rows)
    lines += ["", f"Δ and CI: paired bootstrap over seeds × test items ({N_BOOT:,} resamples) on the final-epoch "
              f"predictions; sign-flip p: exact over the seeds' differences. {FEW} fewer than {FEW_SEEDS} seeds: "
              "the CI is too narrow, read the sign-flip p.", "",
              "## Selection gap (oracle: an upper bound, never ranked)", "",
              "The oracle criterion is each finished trial's accuracy on its validation rows against their true "
              "labels, computed after the study by the evaluator; it never reached the sampler or the pruner. Test "
              f"accuracies here are the trial runs' own (seed {first.seed}, trained without the validation rows); "
              "gap = oracle choice − label-free choice.", ""]
    lines += table(["method", "label-free choice (trial)", "its val acc, true labels (%)", "its test acc (%)",
                    "oracle choice (trial)", "its val acc (%)", "its test acc (%)", "gap (points)"], gap_rows)
    if plots:
        lines += ["", *(f"![{method}]({name})" for method, name in plots)]
    text = "\n".join(lines) + "\n"
    if out is not None:
        name = f"tuned-{first.job({}).run_config().dataset_name}-{first.preset}-{first.criterion}-s{first.seed}.md"
        atomic_write_text(Path(out) / name, text)
    return text
