"""Method registry: entry-point plugins, hyperparameter resolution order."""

from __future__ import annotations

import sys

import pytest

from pllbench import method as registry
from pllbench.errors import PllbenchError
from pllbench.method import get_method, parse_hp_overrides, resolve_hparams


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A third-party package exposing `pllbench.methods = name = module` is imported by load_plugins()."""
    (tmp_path / "my_pll_plugin.py").write_text(
        "from pllbench.method import Method, register_method\n"
        "@register_method('my-plugin')\n"
        "class MyPlugin(Method):\n"
        "    hparams = {'alpha': 1.0}\n")
    dist = tmp_path / "my_pll_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pll-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pllbench.methods]\nmy-plugin = my_pll_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        assert get_method("my-plugin").hparams == {"alpha": 1.0}
        assert "my-plugin" in registry.method_names()
    finally:
        registry._METHODS.pop("my-plugin", None)
        sys.modules.pop("my_pll_plugin", None)


def test_hparam_resolution_order():
    dirk = get_method("dirk")
    hp = resolve_hparams(dirk, "fmnist", {"queue_size": 2048, "not_a_dirk_key": 1}, {})
    assert hp["queue_size"] == 2048 and "not_a_dirk_key" not in hp
    hp = resolve_hparams(dirk, "fmnist", {"queue_size": 2048}, parse_hp_overrides(["queue_size=64", "dirk.tau=0.2"]))
    assert hp["queue_size"] == 64 and hp["tau"] == 0.2 and isinstance(hp["tau"], float)
    hp = resolve_hparams(dirk, "fmnist", {}, parse_hp_overrides(["tau=1"]))
    assert hp["tau"] == 1.0 and isinstance(hp["tau"], float)
    with pytest.raises(PllbenchError, match="expected true or false"):
        resolve_hparams(dirk, "fmnist", {}, parse_hp_overrides(["dirk.ref_forwards=3"]))


def test_parse_hp_values():
    parsed = parse_hp_overrides(["a=1", "b=0.5", "c=true", "m.d=hello", "e=[1, 2]"])
    assert parsed == {"*": {"a": 1, "b": 0.5, "c": True, "e": [1, 2]}, "m": {"d": "hello"}}
