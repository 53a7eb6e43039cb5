"""`RunConfig`: one frozen, typed resolution of a run, and the only place a run's identity is derived.

Every command that needs to know what a run is goes through it: the trainer (the config.json it writes and the folder
it trains into), the grid (a job's run, `status` matching folders to jobs), the leaderboard (a row's label) and
`entangle` (rebuilding a finished run's method).

- `RunConfig.resolve(...)` resolves a run from names and overrides (before any artifact exists);
  `with_artifacts(prep)` adds the hashes of its candidate and teacher artifacts; `from_json(config.json)` reads
  one back (the `environment` key and keys of older versions are tolerated).
- `run_id`: `<dataset>-<preset>/<method>-s<seed>-<h8>`, h8 hashing the fields a run was hashed on since the first
  version (method, hparams, views, seed, dataset, preset, val_fraction, candidates: hash, teacher, mean size and a
  non-default source) plus bf16 when on; `compile` (speed only), the candidate seed (its candidate hash already
  says it) and the environment are left out. So a run folder is named by the run id of its own config.json, and the
  ids of runs made before this module are unchanged. The preset a run records holds only the entries of the
  preset's method table that apply to its method (`with_own_method_table`), so changing one method's preset override
  moves no other method's id. A run recorded with the whole table (the older format) keeps the id its folder has;
  its signature is that of the narrowed run, and a grid finds and resumes (or skips) such a folder instead of
  training the same run again under the new id (train.legacy.recorded_earlier).
- `signature`: every field that makes two runs the same run, without artifact hashes (known before the candidates
  are built): what `status` matches job against folder.
- `label`: the leaderboard name of the run: the method's label plus every departure from its preset (hyperparameters,
  optimisation overrides such as `lr`, epochs, validation split, bf16): `dirk{lr=0.01}`; a run of a configuration
  that `pllbench tune` chose is `dirk{tuned=aa}` (its values are in the tuned board).
- `tuned`: None, or {"criterion", "study", "trial"} for a run of the configuration a study chose (pllbench.tune.study):
  part of its id and signature when set, so such a run is never the default run, and no other run's id moves.

Hyperparameter overrides have one form everywhere (`hparams.canonical_overrides`): {"*": {key: value}, method: {...}}.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..errors import PllbenchError
from ..hparams import UNSCOPED, canonical_overrides, check_views, resolve_hparams
from ..method import get_method
from ..presets import method_overrides, own_method_table, resolve_preset
from ..tune_space import OPTIM_SPACE
from ..util import key_hash
from .legacy import with_missing_fields

# The preset's optimisation settings an unscoped `--hp KEY=VALUE` overrides for every method of the run: (type,
# check, range, meaning). They land in the run's config["preset"], so they are part of its run id. `epochs` is
# also `--epochs`.
OPTIM_KEYS = {
    "lr": (float, lambda v: v > 0, "> 0", "initial learning rate of SGD (cosine-annealed to eta_min)"),
    "momentum": (float, lambda v: 0 <= v < 1, "[0, 1)", "SGD momentum"),
    "weight_decay": (float, lambda v: v >= 0, ">= 0", "SGD weight decay (L2 penalty)"),
    "eta_min": (float, lambda v: v >= 0, ">= 0", "learning rate at the end of the cosine schedule"),
    "batch_size": (int, lambda v: v >= 1, ">= 1", "training batch size (the last partial batch is dropped)"),
    "epochs": (int, lambda v: v >= 1, ">= 1", "training epochs (also --epochs)"),
}
CANDIDATE_SOURCE_DEFAULT = "id"


def _id_hparams(method: str, hparams: dict) -> dict:
    """The hyperparameters a run id hashes: all but those at their declared `implicit` value (HP.implicit)."""
    try:
        specs = get_method(method).hp_specs
    except PllbenchError:
        return hparams
    return {k: v for k, v in hparams.items()
            if k not in specs or specs[k].implicit is None or v != specs[k].implicit}


def _run_source(method_source: str, asked: str) -> str:
    """The candidate source of a run: the one asked for (`uniform:q=0.3`), except that a reference row that brings
    its own (the oracle's true-label sets) keeps it."""
    from ..data.candidates import source_text

    return method_source if method_source != CANDIDATE_SOURCE_DEFAULT else source_text(asked)
_RUN_ID_FIELDS = ("method", "hparams", "views", "seed", "dataset", "preset", "val_fraction")


def check_optim(overrides) -> dict[str, dict]:
    """The overrides in their one form with the optimisation settings normalised (1 → 1.0 for a float); a scoped
    one (`dirk.lr`: the optimiser is the run's, not a method's) and a value of the wrong type or range are refused."""
    out = canonical_overrides(overrides)
    for scope, values in out.items():
        for key, value in values.items():
            if key not in OPTIM_KEYS:
                continue
            if scope != UNSCOPED:
                raise PllbenchError(f"--hp {scope}.{key}: {key} is an optimisation setting of the whole run; pass "
                                    f"--hp {key}={value!r} without a method")
            kind, ok, allowed, _ = OPTIM_KEYS[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or (kind is int and not isinstance(value, int)) or not ok(value):
                raise PllbenchError(f"--hp {key}={value!r}: expected {'an integer' if kind is int else 'a number'} "
                                    f"{allowed}")
            values[key] = kind(value)
    return out


def optim_overrides(overrides) -> dict:
    """The optimisation settings among the unscoped overrides."""
    return {k: v for k, v in canonical_overrides(overrides).get(UNSCOPED, {}).items() if k in OPTIM_KEYS}


def apply_optim(preset_cfg: dict, overrides) -> dict:
    """The preset's settings with the optimisation overrides applied (a new dict)."""
    return {**preset_cfg, **optim_overrides(overrides)}


def dataset_key(dataset: str | dict) -> dict:
    """{"name", "options"} of a dataset given as CLI text (`synthetic:train=64`) or already as a key."""
    if isinstance(dataset, dict):
        if not isinstance(dataset.get("name"), str):
            raise PllbenchError(f"dataset key {dataset!r} has no name")
        return _plain(dataset)
    from ..data.registry import get_dataset

    return get_dataset(dataset).key()


def dataset_text(key: dict) -> str:
    """The CLI form of a dataset key: name or name:k=v,... (options sorted: the same text for the same key)."""
    options = key.get("options") or {}
    return key["name"] + (":" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")


def _plain(value):
    """A JSON round trip: the value exactly as config.json stores it (tuples → lists)."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class RunConfig:
    """A resolved run. `artifacts` ({"hash", "teacher", "mean_size"} of its candidate and teacher artifacts) is None
    until the candidates exist; a run's `run_id` needs it, `signature` and `label` do not."""

    method: str
    dataset: dict  # {"name", "options"}
    preset: dict  # the preset as resolved for the dataset, epochs and optimisation overrides applied
    seed: int
    candidate_seed: int
    hparams: dict
    views: tuple[str, ...]
    val_fraction: float = 0.0
    bf16: bool = False  # bfloat16 autocast (changes the numbers: part of the id when on)
    compile: bool = False  # torch.compile the backbones (speed only: not part of the id)
    candidate_source: str = CANDIDATE_SOURCE_DEFAULT  # "id", or "oracle" for the reference row
    artifacts: dict | None = field(default=None)
    tuned: dict | None = None  # {"criterion", "study", "trial"}: the configuration a study chose (pllbench.tune.study)

    # ------------------------------------------------------------------------------------------------ resolving

    @classmethod
    def resolve(cls, method: str, dataset: str | dict, preset: str | dict, seed: int, *, overrides=None,
                epochs: int | None = None, val_fraction: float = 0.0, candidate_seed: int | None = None,
                bf16: bool = False, compile: bool = False, tuned: dict | None = None,
                candidates: str = CANDIDATE_SOURCE_DEFAULT) -> RunConfig:
        """Resolve one run: the preset for the dataset (a name, or a preset dict already resolved for it), the
        optimisation overrides and `epochs` applied to it, the method's hyperparameters (declarations → dataset →
        preset → overrides, each checked against its range) and the views they need (checked)."""
        method_cls = get_method(method)
        key = dataset_key(dataset)
        overrides = check_optim(overrides)
        cfg = resolve_preset(preset, key["name"]) if isinstance(preset, str) else dict(preset)
        cfg = apply_optim(cfg, overrides)
        if epochs is not None:
            cfg["epochs"] = int(epochs)
        hp = resolve_hparams(method_cls, key["name"], method_overrides(cfg, method_cls.name, method_cls.family),
                             overrides)
        method_cls.check_hparams(hp, cfg)  # rules across hyperparameters and the run (queue_size >= batch, ...)
        views = check_views(method_cls, hp)
        if not 0.0 <= float(val_fraction) < 1.0:
            raise PllbenchError(f"val_fraction {val_fraction!r} must be in [0, 1)")
        return cls(method=method, dataset=key, preset=_plain(cfg), seed=int(seed),
                   candidate_seed=int(seed if candidate_seed is None else candidate_seed), hparams=_plain(hp),
                   views=views, val_fraction=float(val_fraction), bf16=bool(bf16), compile=bool(compile),
                   candidate_source=_run_source(method_cls.candidate_source, candidates),
                   tuned=_plain(tuned) if tuned else None).with_own_method_table()

    def with_own_method_table(self) -> RunConfig:
        """This run with only the entries of its preset's method table that apply to it ('*', its family's, its
        own): how a run is recorded, so that another method's preset override is not part of its id. A run
        recorded in the older format, with the whole table, is the same run under another id
        (train.legacy.recorded_earlier); a method no longer registered keeps its table as recorded."""
        table = self.preset.get("method_hparams")
        if not isinstance(table, dict):
            return self
        try:
            family = get_method(self.method).family
        except PllbenchError:
            return self
        own = own_method_table(table, self.method, family)
        return self if own == table else dataclasses.replace(self, preset=dict(self.preset, method_hparams=own))

    def with_artifacts(self, prep) -> RunConfig:
        """This run with the hashes of the prepared candidate and teacher artifacts; they must be the run's own."""
        report = prep.candidates.report
        source = (report.get("key") or {}).get("source", CANDIDATE_SOURCE_DEFAULT)
        if prep.dataset_key != self.dataset:
            raise PllbenchError(f"prepared data {dataset_text(prep.dataset_key)} is not the run's "
                                f"{self.dataset_text}")
        if int(report["seed"]) != self.candidate_seed or source != self.candidate_source:
            raise PllbenchError(f"prepared candidates (seed {report['seed']}, source {source}) are not the run's "
                                f"(seed {self.candidate_seed}, source {self.candidate_source})")
        artifacts = {"hash": prep.candidates.hash, "teacher": prep.teacher_hash, "mean_size": report["size"]["mean"]}
        return dataclasses.replace(self, artifacts=artifacts)

    @classmethod
    def of(cls, config: RunConfig | dict) -> RunConfig:
        return config if isinstance(config, RunConfig) else cls.from_json(config)

    # ------------------------------------------------------------------------------------------------ JSON form

    def to_json(self) -> dict:
        """The content of config.json (the trainer adds `environment`)."""
        out = {"method": self.method, "hparams": _plain(self.hparams), "views": list(self.views), "seed": self.seed,
               "dataset": _plain(self.dataset), "preset": _plain(self.preset), "val_fraction": self.val_fraction,
               "compile": self.compile, "bf16": self.bf16}
        candidates = {**(self.artifacts or {}), "seed": self.candidate_seed}
        if self.candidate_source != CANDIDATE_SOURCE_DEFAULT:
            candidates["source"] = self.candidate_source
        out["candidates"] = candidates
        if self.tuned:
            out["tuned"] = _plain(self.tuned)
        return out

    @classmethod
    def from_json(cls, config: dict) -> RunConfig:
        """A run from its config.json (or `to_json()`); a config of an older version is read by
        legacy.with_missing_fields."""
        try:
            method, seed = str(config["method"]), int(config["seed"])
            dataset, preset = dataset_key(config["dataset"]), dict(config["preset"])
            if not isinstance(preset.get("name"), str):
                raise KeyError("preset")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PllbenchError(f"not a run config (missing or bad {exc})") from None
        config = with_missing_fields(config)
        hparams = dict(config.get("hparams") or {})
        candidates = dict(config["candidates"])
        candidate_seed = int(candidates.pop("seed"))
        source = str(candidates.pop("source", CANDIDATE_SOURCE_DEFAULT))
        views = config["views"]
        return cls(method=method, dataset=dataset, preset=preset, seed=seed, candidate_seed=candidate_seed,
                   hparams=hparams, views=tuple(views), val_fraction=float(config.get("val_fraction") or 0.0),
                   bf16=bool(config.get("bf16")), compile=bool(config.get("compile")), candidate_source=source,
                   artifacts=candidates if candidates.get("hash") else None, tuned=config.get("tuned") or None)

    # ------------------------------------------------------------------------------------------------ identity

    @property
    def dataset_name(self) -> str:
        return self.dataset["name"]

    @property
    def dataset_text(self) -> str:
        return dataset_text(self.dataset)

    @property
    def preset_name(self) -> str:
        return self.preset["name"]

    @property
    def candidates_hash(self) -> str:
        return (self.artifacts or {}).get("hash", "")

    def train_rows(self, n: int) -> int:
        """Training rows of an n-row train split after the validation hold-out (the trainer's split)."""
        return n - (max(1, round(self.val_fraction * n)) if self.val_fraction > 0 else 0)

    def identity(self) -> dict:
        """What the run id hashes (see the module docstring). A run's id is known once its candidates are built
        (`with_artifacts`); a config without artifacts (a partial one) hashes without them."""
        data = self.to_json()
        out = {k: data[k] for k in _RUN_ID_FIELDS}
        out["hparams"] = _id_hparams(self.method, out["hparams"])
        if self.artifacts is not None:
            out["candidates"] = {k: v for k, v in data["candidates"].items() if k != "seed"}
        if self.bf16:
            out["bf16"] = True
        if self.tuned:
            out["tuned"] = data["tuned"]
        return out

    @property
    def run_id(self) -> str:
        return f"{self.dataset_name}-{self.preset_name}/{self.method}-s{self.seed}-{key_hash(self.identity(), 8)}"

    @property
    def signature(self) -> str:
        """Same signature ⇔ the same run, whatever artifacts it was (or will be) given, and whether it was recorded
        with its preset's whole method table (the older format) or only its own entries."""
        data = self.with_own_method_table().to_json()
        ident = {k: data[k] for k in _RUN_ID_FIELDS}
        ident["hparams"] = _id_hparams(self.method, ident["hparams"])
        ident.update(candidate_seed=self.candidate_seed, candidate_source=self.candidate_source, bf16=self.bf16)
        if self.tuned:
            ident["tuned"] = data["tuned"]
        return key_hash(ident)

    # ------------------------------------------------------------------------------------------------ labels

    @property
    def base_label(self) -> str:
        """The method's own label for these hyperparameters (`cad[identity]`); any run on the oracle's candidate
        source is "oracle" (a reference, whatever learner it trains)."""
        if self.candidate_source == "oracle":
            return "oracle"
        try:
            return get_method(self.method).run_label(self.hparams)
        except (PllbenchError, KeyError, TypeError):
            return self.method

    @property
    def label(self) -> str:
        return self.label_for()

    def label_for(self, base: str | None = None) -> str:
        """`base` (default: base_label; a finished run's final.json label) plus what the run changed relative to its
        preset as it is defined now: hyperparameters (those the base label does not already show), optimisation
        overrides, epochs, the validation split and bf16. A tuned run says `tuned=<criterion>` instead of the values
        its study chose (those with a search space); a value fixed for the whole study still shows."""
        label = base or self.base_label
        changes: list[str] = [f"tuned={self.tuned.get('criterion', '?')}"] if self.tuned else []
        try:
            preset = resolve_preset(self.preset_name, self.dataset_name)
            cls = get_method(self.method)
            defaults = resolve_hparams(cls, self.dataset_name, method_overrides(preset, cls.name, cls.family), {})
            shown = cls.run_label(defaults)  # a change the label already shows (cad's editor) is not repeated
            chosen = ({k for k, spec in cls.hp_specs.items() if spec.tune is not None} | set(OPTIM_SPACE)
                      if self.tuned else set())
            changes += [f"{k}={v}" for k, v in sorted(self.hparams.items())
                        if defaults.get(k) != v and cls.run_label({**defaults, k: v}) == shown and k not in chosen]
            changes += [f"{k}={self.preset[k]}" for k in OPTIM_KEYS if k != "epochs" and k not in chosen
                        and k in self.preset and self.preset[k] != preset.get(k)]
            if self.preset.get("epochs") != preset["epochs"]:
                changes.append(f"epochs={self.preset['epochs']}")
        except (PllbenchError, KeyError, TypeError):
            pass
        if self.val_fraction:
            changes.append(f"val={self.val_fraction:g}")
        if self.bf16:
            changes.append("bf16")
        return label + ("{" + ", ".join(changes) + "}" if changes else "")


def run_id(config: RunConfig | dict) -> str:
    """The run id of a config (a RunConfig, or config.json's content: the `environment` key is not part of it)."""
    return RunConfig.of(config).run_id
