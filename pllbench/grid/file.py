"""A grid's TOML file (docs/grids.md): every key checked with a one-line error that names the file and the key."""

from __future__ import annotations

from pathlib import Path

from ..errors import PllbenchError
from ..hparams import UNSCOPED
from ..util import is_number

LAUNCHERS = ("local", "ray", "slurm")
SLURM_KEYS = {"partition": str, "timeout_min": int, "array_parallelism": int, "mem_gb": (int, float),
              "account": str, "qos": str, "constraint": str, "cluster": str}

_TOP_KEYS = {
    "methods": "a list of method names (or \"all\")", "datasets": "a list of dataset names",
    "seeds": "a list of non-negative integers", "preset": "a preset name", "epochs": "a positive integer",
    "hp": "a table of key = value (and [hp.METHOD] tables)", "val_fraction": "a number in [0, 0.5]",
    "candidate_seed": "an integer", "candidates": "a candidate source (\"id\" or \"uniform:q=0.3\")",
    "launcher": f"one of {', '.join(LAUNCHERS)}",
    "workers": "a positive integer", "address": "a Ray address string", "gpus_per_job": "a number >= 0",
    "cpus_per_job": "a number > 0", "slurm": f"a table with keys {', '.join(SLURM_KEYS)}",
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(value, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PllbenchError(f"{where}: key {key!r} must be {_TOP_KEYS[key]}")
    return value


def load_grid_file(path: str | Path) -> tuple[dict, dict]:
    """(spec fields, launch fields) from a grid TOML; one-line errors naming the offending key."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise PllbenchError("grid files need Python >= 3.11 (tomllib) or `pip install tomli`") from None
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise PllbenchError(f"cannot read grid file {where}: {exc.strerror or exc}; pass --grid with the path of "
                            f"a grid TOML (docs/grids.md)") from None
    except UnicodeDecodeError as exc:
        raise PllbenchError(f"{where} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                            f"a grid file is a TOML text file (docs/grids.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PllbenchError(f"{where} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise PllbenchError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(_TOP_KEYS)}")

    def bad(key):
        return PllbenchError(f"{where}: key {key!r} must be {_TOP_KEYS[key]}, got {data[key]!r}")

    spec: dict = {}
    launch: dict = {}
    for key, value in data.items():
        if key in ("methods", "datasets"):
            items = _names(value, key, where)
            spec[key] = ",".join(items) if key == "methods" else items
        elif key == "seeds":
            seeds = [value] if _is_int(value) else value
            if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
                raise bad(key)
            spec[key] = [int(s) for s in seeds]
        elif key == "candidates":
            if not isinstance(value, str) or not value:
                raise bad(key)
            spec[key] = value
        elif key == "preset" or key == "address":
            if not isinstance(value, str) or not value:
                raise bad(key)
            (spec if key == "preset" else launch)[key] = value
        elif key in ("epochs", "workers"):
            if not _is_int(value) or value < 1:
                raise bad(key)
            (spec if key == "epochs" else launch)[key] = value
        elif key == "candidate_seed":
            if not _is_int(value) or value < 0:
                raise bad(key)
            spec[key] = value
        elif key == "val_fraction":
            if not is_number(value) or not 0 <= value <= 0.5:
                raise bad(key)
            spec[key] = float(value)
        elif key == "launcher":
            if value not in LAUNCHERS:
                raise bad(key)
            launch[key] = value
        elif key in ("gpus_per_job", "cpus_per_job"):
            if not is_number(value) or value < 0 or (key == "cpus_per_job" and value == 0):
                raise bad(key)
            launch[key] = float(value)
        elif key == "hp":
            spec[key] = _hp_table(value, where)
        elif key == "slurm":
            launch[key] = _slurm_table(value, where)
    return spec, launch


def _hp_table(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise PllbenchError(f"{where}: key 'hp' must be {_TOP_KEYS['hp']}")
    out: dict = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if isinstance(sub_value, dict):
                    raise PllbenchError(f"{where}: key 'hp.{key}.{sub}' must be a value, not a table")
                out.setdefault(key, {})[sub] = sub_value
        else:
            out.setdefault(UNSCOPED, {})[key] = value
    return out


def _slurm_table(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise PllbenchError(f"{where}: key 'slurm' must be {_TOP_KEYS['slurm']}")
    for key, value in table.items():
        if key not in SLURM_KEYS:
            raise PllbenchError(f"{where}: unknown key 'slurm.{key}'; allowed: {', '.join(SLURM_KEYS)}")
        expected = SLURM_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise PllbenchError(f"{where}: key 'slurm.{key}' has the wrong type ({value!r})")
        if key == "cluster" and value not in ("slurm", "local"):
            raise PllbenchError(f"{where}: key 'slurm.cluster' must be 'slurm' or 'local', got {value!r}")
    return dict(table)
