"""RunConfig (pllbench/train/runconfig.py): one resolution of a run that the trainer, the grid and `status`, the
leaderboard and `entangle` all agree on; hyperparameter declarations (type, range, views) checked at resolve time; the
artifact store in the method context; a regression test for each drift the single resolution removed."""

from __future__ import annotations

import json
import random

import pytest
import torch
from cli_helpers import DATA, error_line, run_dirs, smoke
from conftest import smoke_run

from pllbench.artifacts import ArtifactStore
from pllbench.cad_edits.edits import build_edits, edits_key
from pllbench.cli import main
from pllbench.data.prepare import prepare
from pllbench.entangle.extractors import load_run_method
from pllbench.errors import PllbenchError
from pllbench.grid.file import load_grid_file
from pllbench.grid.jobs import GridSpec
from pllbench.grid.status import grid_status
from pllbench.leaderboard.results import load_runs, row_label
from pllbench.method import (
    HP,
    MethodContext,
    ViewBatch,
    canonical_overrides,
    get_method,
    method_names,
    parse_hp_overrides,
    resolve_hparams,
)
from pllbench.presets import method_overrides, resolve_preset
from pllbench.train import loop as trainer
from pllbench.train.runconfig import RunConfig, run_id
from pllbench.train.runs import scan
from pllbench.util import key_hash
from pllbench.views.maker import run_view_maker

CPU = torch.device("cpu")
# Hyperparameters a random draw leaves alone: sizes tied to each other or to the batch, and the edit source.
FIXED = {"dim", "heads", "ffn", "queue_size", "decoder_dim", "editor", "edits"}


def _prep(cache, seed, candidate_seed=None, source="id"):
    return prepare("synthetic", "smoke", seed, cache=cache, device=CPU, echo=lambda *_: None,
                   candidate_seed=candidate_seed, candidate_source=source)


def _random_value(spec: HP, rng: random.Random):
    if spec.choices is not None:
        return rng.choice(spec.choices)
    if isinstance(spec.default, bool):
        return not spec.default
    if isinstance(spec.default, int):
        return spec.default + rng.randint(1, 3)
    low = spec.low if spec.low is not None else 0.0
    high = spec.high if spec.high is not None else low + 2.0
    return round(low + (high - low) * rng.uniform(0.05, 0.95), 3)


def _random_spec(rng: random.Random) -> GridSpec:
    method = rng.choice(method_names())
    cls = get_method(method)
    hp: dict = {}
    for key in rng.sample(sorted(set(cls.hp_specs) - FIXED), k=min(2, len(set(cls.hp_specs) - FIXED))):
        if rng.random() < 0.7:
            scope = rng.choice(["*", method])
            hp.setdefault(scope, {})[key] = _random_value(cls.hp_specs[key], rng)
    optim = {"lr": round(rng.uniform(0.001, 0.1), 4), "momentum": round(rng.uniform(0.0, 0.95), 3),
             "weight_decay": rng.choice([0.0, 1e-4]), "eta_min": rng.choice([0.0, 1e-5]),
             "batch_size": rng.choice([8, 16]), "epochs": rng.choice([1, 3])}
    for key in rng.sample(sorted(optim), k=rng.randint(0, 2)):
        hp.setdefault("*", {})[key] = optim[key]
    return GridSpec([method], ["synthetic"], [rng.randint(0, 2)], "smoke", epochs=rng.choice([None, 1, 2]), hp=hp,
                    val_fraction=rng.choice([0.0, 0.125, 0.25]), candidate_seed=rng.choice([None, 0, 1]),
                    bf16=rng.random() < 0.3)


def test_random_configs_agree_across_trainer_grid_status_results_and_entangle(smoke_cache, tmp_path):
    rng = random.Random(14)
    runs = tmp_path / "runs"
    specs, resolved = [], {}
    for _ in range(14):
        spec = _random_spec(rng)
        spec.validate()
        job = spec.jobs()[0]
        source = get_method(job.method).candidate_source
        prep = _prep(smoke_cache, job.seed, job.candidate_seed, source)
        # the trainer's resolution (what `train_run` writes) and the grid's (a job's run) agree on every field
        config = trainer.resolve_run_config(prep, job.method, job.seed, spec.hp, spec.epochs, spec.val_fraction,
                                            bf16=spec.bf16)
        run = job.run_config().with_artifacts(prep)
        assert run.to_json() == config and RunConfig.from_json(config) == run
        assert run.candidate_seed == (job.seed if spec.candidate_seed is None else spec.candidate_seed)
        assert run.preset["epochs"] == (spec.epochs or spec.hp.get("*", {}).get("epochs") or 2)
        preset = resolve_preset("smoke", "synthetic")
        for key, value in spec.hp.get("*", {}).items():
            if key in ("lr", "momentum", "weight_decay", "eta_min", "batch_size"):
                assert run.preset[key] == value
                assert (f"{key}={value}" in run.label) == (value != preset[key]), run.label
        run_dir = runs / run_id(config)
        trainer.write_config(run_dir, run, CPU)
        on_disk = json.loads((run_dir / "config.json").read_text())
        assert run_id(on_disk) == f"{run_dir.parent.name}/{run_dir.name}" == run.run_id
        assert RunConfig.from_json(on_disk) == run
        # entangle rebuilds the method the trainer built: same hyperparameters, views, context and artifact store
        cands = torch.from_numpy(prep.candidates.matrix).float()
        maker = run_view_maker(prep.data.info, run.preset, channels_last=True)
        ctx = MethodContext.for_run(run, prep.data.info, cands, maker, prep.data.train.images, CPU,
                                    ArtifactStore.holding(prep.candidates.path))
        torch.manual_seed(0)
        torch.save(get_method(run.method)(ctx, run.hparams).state_dict(), run_dir / "model.pt")
        method, _, _ = load_run_method(run_dir, smoke_cache, CPU)
        n = len(cands)
        n_val = max(1, round(run.val_fraction * n)) if run.val_fraction else 0
        assert method.hp == run.hparams and method.views == run.views
        assert method.ctx.steps_per_epoch == (n - n_val) // run.preset["batch_size"] == ctx.steps_per_epoch
        assert (method.ctx.epochs, method.ctx.batch_size) == (run.preset["epochs"], run.preset["batch_size"])
        assert method.ctx.artifacts.candidates == run.candidates_hash == config["candidates"]["hash"]
        assert method.ctx.artifacts.origin == {"dataset": run.dataset_text, "preset": "smoke",
                                               "candidate_seed": run.candidate_seed}
        specs.append(spec)
        resolved[run.run_id] = run
    assert len(resolved) >= 12  # the draws are distinct runs
    assert len({r.signature for r in resolved.values()}) == len(resolved)
    # status: each job is counted by its own folder, and by no other's
    folders = scan(runs)
    for spec in specs:
        status = grid_status(spec, folders, runs)
        run = spec.jobs()[0].run_config()
        assert not status.pending and [r.rel for r in status.incomplete] == [
            rid for rid, r in resolved.items() if r.signature == run.signature]
    # results / leaderboard: one row per folder, with the run's fields and label
    frame = load_runs(runs).set_index("run")
    assert sorted(frame.index) == sorted(resolved)
    for rid, run in resolved.items():
        row = frame.loc[rid]
        assert (row["method"], row["seed"], row["dataset"], row["preset"]) == (
            run.method, run.seed, run.dataset_name, run.preset_name)
        assert (bool(row["bf16"]), row["val_fraction"], row["candidate_source"], row["candidate_hash"]) == (
            run.bf16, run.val_fraction, run.candidate_source, run.candidates_hash)
        assert json.loads(row["hparams"]) == run.hparams and row["label"] == run.label
        assert row["epochs"] == run.preset["epochs"]


# -------------------------------------------------------------------------------------------- identity drifts


def _legacy_run_id(config: dict) -> str:
    """trainer.run_id before RunConfig (hash of the whole dict but compile, and bf16 when off)."""
    identity = {k: v for k, v in config.items() if k != "compile" and not (k == "bf16" and not v)}
    name = config["dataset"]["name"]
    return f"{name}-{config['preset']['name']}/{config['method']}-s{config['seed']}-{key_hash(identity, 8)}"


def test_a_run_folder_is_named_by_the_run_id_of_its_own_config_json(smoke_cache, tmp_path):
    """Measured before: 0 of 2 smoke runs, since config.json also holds `environment` (and now the candidate seed)."""
    for method, kwargs in (("proden", {}), ("dirk-ref", {"val_fraction": 0.25, "epochs": 1})):
        final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs", **kwargs)
        config = json.loads((run_dir / "config.json").read_text())
        rel = f"{run_dir.parent.name}/{run_dir.name}"
        assert run_id(config) == rel == final["run"] == RunConfig.from_json(config).run_id
        assert "environment" in config and _legacy_run_id(config) != rel  # the old function missed it


def test_run_ids_of_existing_runs_are_unchanged(smoke_cache):
    """The id hashes the fields it always hashed, with the values it always had: the preset's method table is
    recorded as presets.py held it before the method files did (the CEL, VALEN and CAD entries)."""
    prep = _prep(smoke_cache, 0)
    whole = {"*": {"queue_size": 128}, "cel": {"dim": 16, "heads": 2, "ffn": 32, "warmup_epochs": 1},
             "valen": {"warmup_epochs": 1, "decoder_dim": 768}, "cad": {"editor": "identity"}}
    table = resolve_preset("smoke", "synthetic")["method_hparams"]
    assert {k: table[k] for k in whole} == whole  # methods added since bring their own entries
    own = {"dirk": {"*": whole["*"]}, "oracle": {"*": whole["*"]}, "able": {"*": whole["*"]},
           **{m: {"*": whole["*"], m: whole[m]} for m in ("cad", "cel", "valen")}}
    for method in ("dirk", "cad", "cel", "valen", "oracle", "able"):
        source = get_method(method).candidate_source
        p = prep if source == "id" else _prep(smoke_cache, 0, source=source)
        config = trainer.resolve_run_config(p, method, 0, {})
        legacy = {k: v for k, v in config.items() if k not in ("compile", "bf16")}
        legacy["candidates"] = {k: v for k, v in config["candidates"].items() if k != "seed"}
        # keys declared after these runs were made, at the value the runs had (HP.implicit), are not hashed
        legacy["hparams"] = {k: v for k, v in config["hparams"].items() if k != "weight_lookup"}
        assert run_id(config) == _legacy_run_id(legacy)
        assert config["preset"]["method_hparams"] == own[method]  # only the entries that apply to the method
        old = dict(config, preset=dict(config["preset"], method_hparams=whole))  # recorded before the narrowing
        assert RunConfig.from_json(old).run_id == _legacy_run_id(
            dict(legacy, preset=old["preset"])) != run_id(config)  # an old folder keeps its own id
        assert RunConfig.from_json(old).signature == RunConfig.from_json(config).signature  # and is the same run
    quick = {  # quick's ids changed once, with teacher_init
        "*": {"queue_size": 2048}, "cel": {"dim": 64, "heads": 4, "ffn": 128, "warmup_epochs": 7},
        "valen": {"warmup_epochs": 2, "decoder_dim": 784}, "cad": {"editor": "identity", "teacher_init": "student"},
        "dirk": {"teacher_init": "student"}}
    table = resolve_preset("quick", "fmnist")["method_hparams"]
    assert {k: table[k] for k in quick} == quick
    assert resolve_preset("paper", "cifar10")["method_hparams"] == {}
    assert run_id(trainer.resolve_run_config(prep, "dirk", 0, {}, bf16=True)) != run_id(
        trainer.resolve_run_config(prep, "dirk", 0, {}))


def test_changing_one_methods_preset_override_moves_only_its_own_family_ids(monkeypatch):
    """Measured before: quick's whole method table was part of every quick run's identity, so setting plain DIRK's
    teacher start would have trained CAD-CAM, PRODEN and the rest again."""
    methods = ("dirk", "dirk-ref", "cad-cam", "cad", "proden", "cel", "oracle")
    before = {m: RunConfig.resolve(m, "fmnist", "quick", 0) for m in methods}
    monkeypatch.setattr(get_method("dirk"), "preset_hparams", {"quick": {"teacher_init": "separate"}})
    after = {m: RunConfig.resolve(m, "fmnist", "quick", 0) for m in methods}
    moved = {m for m in methods if after[m].run_id != before[m].run_id}
    assert moved == {"dirk", "dirk-ref"}  # DIRK-REF is of DIRK's family: the table entry is the family's
    assert {m for m in methods if after[m].signature != before[m].signature} == moved
    assert after["dirk"].hparams["teacher_init"] == "separate"
    assert after["cad-cam"].preset["method_hparams"] == {"*": {"queue_size": 2048},
                                                         "cad": {"editor": "identity", "teacher_init": "student"}}


def test_per_preset_overrides_live_in_the_method_files_with_the_same_values():
    expected = {("quick", "cel"): {"dim": 64, "heads": 4, "ffn": 128, "warmup_epochs": 7},
                ("quick", "valen"): {"warmup_epochs": 2, "decoder_dim": 784},
                ("quick", "cad"): {"editor": "identity", "teacher_init": "student"},
                ("quick", "cad-norl"): {"editor": "identity"},
                ("quick", "cad-cam"): {"teacher_init": "student", "prot_start": 1},
                ("quick", "cad-cam-noca"): {"teacher_init": "student"}, ("quick", "dirk"): {"teacher_init": "student"},
                ("quick", "dirk-ref"): {"teacher_init": "student"}, ("smoke", "dirk"): {"teacher_init": "separate"},
                ("smoke", "cel"): {"dim": 16, "heads": 2, "ffn": 32, "warmup_epochs": 1},
                ("smoke", "valen"): {"warmup_epochs": 1, "decoder_dim": 768}}
    for (preset, method), values in expected.items():
        cls = get_method(method)
        dataset = "fmnist" if preset == "quick" else "synthetic"
        hp = resolve_hparams(cls, dataset, method_overrides(resolve_preset(preset, dataset), method, cls.family), {})
        assert {k: hp[k] for k in values} == values
    assert get_method("dirk").hparams["queue_size"] == 4096
    cfg = resolve_preset("quick", "fmnist")
    assert resolve_hparams(get_method("dirk-ref"), "fmnist", method_overrides(cfg, "dirk-ref", "dirk"),
                           {})["queue_size"] == 2048
    import pllbench.presets as presets

    assert all(set(p["method_hparams"]) <= {"*"} for p in presets.PRESETS.values())  # nothing method-specific


def test_every_method_ensures_its_artifacts_with_its_own_preset_hparams(tmp_path):
    """The grid calls ensure_artifacts before training; quick's CAD-family table entry must not break CAD-CAM."""
    from pllbench.method import ArtifactRequest, registered_methods

    for preset, dataset in (("quick", "fmnist"), ("smoke", "synthetic")):
        cfg = resolve_preset(preset, dataset)
        for cls in registered_methods():
            hp = resolve_hparams(cls, dataset, method_overrides(cfg, cls.name, cls.family), {})
            cls.ensure_artifacts(hp, ArtifactRequest(dataset, preset, 0, "c0", tmp_path, torch.device("cpu"),
                                                     echo=lambda line: None))


def test_status_tells_bf16_and_candidate_seeds_apart(capsys, smoke_cache, tmp_path):
    """run_signature left out bf16 and the candidate seed: `status` counted a bf16 run, or a run on other candidates,
    as the job's."""
    runs = tmp_path / "runs"
    base = ["--methods", "cc", "--dataset", "synthetic", "--preset", "smoke", "--epochs", "1", "--runs", str(runs)]
    assert main(["run", *base, "--bf16", "--no-progress", "--cache-dir", str(smoke_cache)]) == 0
    capsys.readouterr()
    assert main(["status", "--runs", str(runs)]) == 0  # the recorded grid knows it ran in bf16
    assert "done 1 · running 0 · failed 0 · interrupted 0 · corrupt 0 · pending 0 · 1 job" in capsys.readouterr().out
    for extra in ([], ["--candidate-seed", "1"]):  # the fp32 run, the run on seed-1 candidates: not done
        assert main(["status", *base, *extra]) == 0
        out = capsys.readouterr().out
        assert "done 0 ·" in out and "pending 1 · 1 job" in out, out
    folders = scan(runs)
    spec = GridSpec(["cc"], ["synthetic"], [0], "smoke", epochs=1)
    assert grid_status(spec, folders).pending and not grid_status(spec, folders).done
    assert grid_status(GridSpec(["cc"], ["synthetic"], [0], "smoke", epochs=1, bf16=True), folders).done
    assert not grid_status(GridSpec(["cc"], ["synthetic"], [0], "smoke", epochs=1, bf16=True, candidate_seed=1),
                           folders).done


def test_entangle_reloads_a_cad_run_with_stored_edits(smoke_cache, tmp_path):
    """load_run_method built a context without the cache fields, so a CAD run with stored (ip2p-like) edits lost its
    center distance with a warning naming an empty hash; it now gets the run's artifact store."""
    prep = _prep(smoke_cache, 0)
    size = prep.data.info.input_size
    images = prep.data.train.images.expand(-1, 3, -1, -1) if prep.data.info.channels == 1 else prep.data.train.images
    build_edits(smoke_cache, edits_key(prep.candidates.hash, "stamped", seed=0), prep.candidates.matrix, size,
                lambda inst, lab: (images[torch.from_numpy(inst)] // 2 + 10 * torch.from_numpy(lab)[:, None, None,
                                                                                                   None]).byte())
    final, run_dir, _ = smoke_run("cad", smoke_cache, tmp_path / "runs", hp={"editor": "stamped"}, epochs=1)
    method, config, _ = load_run_method(run_dir, smoke_cache, CPU)
    assert method.ctx.artifacts.candidates == config["candidates"]["hash"] == prep.candidates.hash
    assert method.edit_source.folder.parent == smoke_cache / "edits"
    assert final["label"] == "cad[stamped]"
    with pytest.raises(PllbenchError, match=f"no 'other' edits for candidates {prep.candidates.hash}"):
        smoke_run("cad", smoke_cache, tmp_path / "runs2", hp={"editor": "other"}, epochs=1)


def test_optimisation_override_shows_in_the_row_label(smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    smoke_run("cc", smoke_cache, runs, epochs=1)
    _, run_dir, _ = smoke_run("cc", smoke_cache, runs, hp={"lr": 0.01}, epochs=1)  # unscoped: the run's lr
    labels = sorted(load_runs(runs)["label"])
    assert labels == ["cc{epochs=1}", "cc{lr=0.01, epochs=1}"]
    assert json.loads((run_dir / "config.json").read_text())["preset"]["lr"] == 0.01
    assert row_label(next(r for r in scan(runs) if r.path == run_dir)) == "cc{lr=0.01, epochs=1}"


# ------------------------------------------------------------------------------- declarations checked at resolve


def test_a_hyperparameter_out_of_range_is_one_clear_error_before_any_work(capsys, tmp_path):
    runs = tmp_path / "runs"
    for hp, needle in (("dirk.ema=1e9", "--hp dirk.ema=1000000000.0 for dirk: expected a value in [0, 1)"),
                       ("tau=-1", "--hp tau=-1 for dirk: expected a value > 0"),
                       ("dirk.prot_start=0.5", "expected an integer like 1"),
                       ("dirk.ref_forwards=3", "expected true or false (or 1/0, yes/no)")):
        code = main(["run", "--methods", "dirk", "--dataset", "synthetic", "--preset", "smoke", "--runs", str(runs),
                     "--hp", hp])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("error: ") and needle in err[-1], err
        assert len([line for line in err if line.startswith("error")]) == 1
    assert not runs.exists()
    with pytest.raises(PllbenchError, match="EMA momentum"):
        RunConfig.resolve("dirk", "synthetic", "smoke", 0, overrides={"dirk": {"ema": 1e9}})


def test_views_follow_the_hyperparameters(smoke_cache, tmp_path):
    """`--hp dirk.ref_weight=1` passed validation and died at the first step with KeyError: 'weak'."""
    assert RunConfig.resolve("dirk", "synthetic", "smoke", 0).views == ("cls", "strong")
    assert RunConfig.resolve("dirk", "synthetic", "smoke", 0, overrides=parse_hp_overrides(
        ["dirk.ref_weight=1"])).views == ("cls", "weak", "strong")
    assert RunConfig.resolve("dirk-ref", "synthetic", "smoke", 0).views == ("cls", "weak", "strong")
    final, _, _ = smoke_run("dirk", smoke_cache, tmp_path / "runs", hp={"ref_weight": 1.0}, epochs=1)
    assert final["test_acc"] >= 0
    with pytest.raises(PllbenchError, match="read the view 'weak'"):
        ViewBatch("dirk", {"cls": torch.zeros(1)})["weak"]


def test_every_declaration_is_complete_and_its_default_in_range():
    for name in method_names():
        cls = get_method(name)
        assert set(cls.hparams) == set(cls.hp_specs) == set(cls.hparam_docs)
        for key, spec in cls.hp_specs.items():
            assert spec.doc and spec.problem(spec.default) is None, (name, key)
        for table in (*cls.preset_hparams.values(), *cls.dataset_hparams.values()):
            assert all(cls.hp_specs[k].problem(v) is None for k, v in table.items()), name
    assert get_method("cad-cam").hparam_docs["ema"] == get_method("cad").hparam_docs["ema"]  # inherited
    assert get_method("dirk-ref").hp_specs["ref_weight"].default == 1.0


def test_a_plugin_declaring_plain_defaults_still_works():
    from pllbench.method import Method

    class Plain(Method):
        hparams = {"alpha": 1.0}
        hparam_docs = {"alpha": (">= 0", "a weight")}

    assert Plain.hparams == {"alpha": 1.0} and Plain.hparam_docs == {"alpha": (">= 0", "a weight")}
    assert Plain.hp_specs["alpha"].problem(-1.0) is None  # words, not bounds: nothing to check


# -------------------------------------------------------------------------------------------- one override form


def test_overrides_have_one_form(tmp_path):
    form = {"*": {"tau": 0.1, "lr": 0.01}, "dirk": {"ema": 0.9}}
    assert parse_hp_overrides(["tau=0.1", "lr=0.01", "dirk.ema=0.9"]) == form
    assert canonical_overrides({None: {"tau": 0.1, "lr": 0.01}, "dirk": {"ema": 0.9}, "x": {}}) == form
    assert canonical_overrides(json.dumps(form)) == form
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["dirk"]\ndatasets = ["synthetic"]\npreset = "smoke"\n[hp]\ntau = 0.1\nlr = 0.01\n'
                    '[hp.dirk]\nema = 0.9\n')
    assert load_grid_file(grid)[0]["hp"] == form
    spec = GridSpec(["dirk", "proden"], ["synthetic"], [0], "smoke", hp={None: {"tau": 0.1, "lr": 0.01},
                                                                        "dirk": {"ema": 0.9}})
    assert spec.hp == form and spec.identity()["hp"] == form
    dirk, proden = spec.jobs()
    assert dirk.hp == form and proden.hp == {"*": {"lr": 0.01}}  # tau and dirk.ema do not reach proden
    assert dirk.key()["hp"] == form
    # grid and job ids are what they were (the identity always wrote "*"; fp32 records no bf16)
    assert spec.id == key_hash({"methods": ["dirk", "proden"], "datasets": ["synthetic"], "seeds": [0],
                                "preset": "smoke", "epochs": None, "hp": form, "val_fraction": 0.0,
                                "candidate_seed": None}, 10)


def test_optimisation_settings_are_settable_and_part_of_the_run_id(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "1", "--no-progress")) == 0
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--no-progress", "--hp", "lr=0.01", "--hp",
                      "batch_size=8", "--hp", "weight_decay=0", "--hp", "epochs=1")) == 0
    folders = run_dirs(runs, "cc")
    assert len(folders) == 2, folders
    configs = {d: json.loads((d / "config.json").read_text()) for d in folders}
    changed = next(d for d, c in configs.items() if c["preset"]["lr"] == 0.01)
    default = next(d for d in folders if d != changed)
    assert configs[changed]["preset"]["batch_size"] == 8 and configs[changed]["preset"]["weight_decay"] == 0.0
    assert configs[changed]["preset"]["epochs"] == 1 and configs[default]["preset"]["lr"] == 0.05
    assert "1 epoch of 8 steps (batch 8)" in capsys.readouterr().err  # the header: 64 rows in batches of 8
    # status finds the run with the overrides (its signature includes them)
    assert main(["status", "--runs", str(runs), "--methods", "cc", "--dataset", DATA, "--preset", "smoke",
                 "--hp", "lr=0.01", "--hp", "batch_size=8", "--hp", "weight_decay=0", "--epochs", "1"]) == 0
    assert "done 1 ·" in capsys.readouterr().out
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--hp", "cc.lr=0.1"),
               "--hp cc.lr", "pass --hp lr=0.1 without a method")
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--hp", "lr=-1"), "--hp lr=-1", "> 0")
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--hp", "batch_size=2.5"), "an integer >= 1")
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "2", "--hp", "epochs=3"),
               "disagree")
