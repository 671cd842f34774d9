"""The three DDRM configs (`configs/*.yml`) and `load_config`.

A config keeps the reference DDRM schema (``data``, ``model``, ``diffusion``, ``sampling`` and, for
the class-conditional model, ``classifier``) and adds ``name``, ``display``, ``checkpoints`` (keys
into the registry) and ``ddrm`` (the demo's defaults: task, sigma_y, steps, eta, eta_b).

>>> cfg = load_config("celeba_hq", **{"model.ch": 32})
>>> cfg.model.ch, cfg.ddrm.steps
(32, 20)
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .paths import CONFIGS_DIR, PRIOR_DIR

CONFIG_NAMES = ("celeba_hq", "imagenet_256", "imagenet_256_cc")
# The shipped digits prior (8x8 handwritten digits): a config like the others, whose checkpoint ships
# with the package, so that every front end can be tried offline with a real learned prior.
DIGITS_CONFIG = "digits"
OVERRIDES_ENV = "DDRM_CONFIG_OVERRIDES"
REQUIRED_SECTIONS = ("name", "checkpoints", "ddrm", "data", "model", "diffusion", "sampling")


class Config(Mapping):
    """A read-only tree of settings with attribute access (``cfg.model.ch``).

    Read-only so that no call can change a config that a later cell reuses; derive a changed copy
    with :meth:`replace`.
    """

    __slots__ = ("_data", "_name", "_prefix")

    def __init__(self, data: Mapping[str, Any], name: str = "config", prefix: str = ""):
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_prefix", prefix)

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, Mapping):
            return Config(value, self._name, f"{self._prefix}{key}.")
        return copy.deepcopy(value) if isinstance(value, list) else value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):  # copy/pickle probe dunders; they are not settings
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(_unknown_key_message(self._name, self._prefix, key, self._data)) from None

    def __setattr__(self, key, value):
        raise AttributeError(
            f"config {self._name} is read-only; derive a copy with "
            f".replace(**{{'{self._prefix}{key}': ...}})"
        )

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Config({self._name}{':' + self._prefix[:-1] if self._prefix else ''}, {self._data!r})"

    def __eq__(self, other) -> bool:
        if isinstance(other, Config):
            return self._data == other._data
        return NotImplemented

    def __hash__(self):
        return hash(json.dumps(self._data, sort_keys=True, default=repr))

    def to_dict(self) -> dict:
        """A deep copy as plain dicts and lists."""
        return copy.deepcopy(self._data)

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted keys set: ``cfg.replace(**{"model.num_channels": 32})``."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value, self._name, self._prefix)
        return Config(data, self._name, self._prefix)


def available_configs() -> list[str]:
    """Names of the three product configs, in ``configs/`` (what ``demo`` runs)."""
    return list(CONFIG_NAMES)


def known_configs() -> list[str]:
    """Every config a name reaches: the three product configs and ``digits``, the shipped prior
    (what ``status`` lists and the command line accepts)."""
    return [*CONFIG_NAMES, DIGITS_CONFIG]


def learns_sigma(config: Mapping) -> bool:
    """Whether a config's model predicts a variance as well as the noise, as C more output channels
    after the C noise channels: ``model.learn_sigma`` (the OpenAI guided-diffusion configs), or a
    ``model.var_type`` of ``learned`` or ``learned_range`` (the reference DDPM schema).

    >>> learns_sigma(load_config("imagenet_256")), learns_sigma(load_config("celeba_hq"))
    (True, False)
    """
    model = config["model"]
    return bool(model.get("learn_sigma", False)) or model.get("var_type") in ("learned", "learned_range")


def load_config(name_or_path: str | os.PathLike, **overrides: Any) -> Config:
    """Load a config by name (``celeba_hq``, ``imagenet_256``, ``imagenet_256_cc``, ``digits``) or from a path.

    ``overrides`` are dotted keys, for example ``load_config("imagenet_256",
    **{"model.num_channels": 32, "ddrm.steps": 10})``. A key that the config does not have is an
    error (a typo should not be silently ignored); a string given for a number or a list is parsed
    as YAML, so values from a command line work.
    """
    path = _resolve(name_or_path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of config sections")
    missing = [s for s in REQUIRED_SECTIONS if s not in data]
    if missing:
        raise ConfigError(
            f"{path} lacks the section(s) {', '.join(missing)}; a config needs "
            f"{', '.join(REQUIRED_SECTIONS)} (see configs/celeba_hq.yml for the schema)"
        )
    config = Config(data, str(data["name"]))
    return config.replace(**{**env_overrides(config.name), **overrides})


def env_overrides(name: str) -> dict[str, Any]:
    """Overrides for config ``name`` from ``$DDRM_CONFIG_OVERRIDES``, a JSON object such as
    ``{"celeba_hq": {"model.ch": 32, "data.image_size": 32}, "*": {"ddrm.steps": 5}}``.

    For tests and experiments: it lets a notebook run unchanged with tiny models.
    """
    text = os.environ.get(OVERRIDES_ENV)
    if not text:
        return {}
    try:
        table = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"${OVERRIDES_ENV} is not valid JSON: {err}") from err
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"${OVERRIDES_ENV} maps config names (or '*') to objects of dotted keys")
    return {**table.get("*", {}), **table.get(name, {})}


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    if text in CONFIG_NAMES:
        return CONFIGS_DIR / f"{text}.yml"
    if text == DIGITS_CONFIG:
        return PRIOR_DIR / "digits.yml"
    path = Path(text).expanduser()
    if path.suffix in (".yml", ".yaml") or os.sep in text or "/" in text:
        if not path.is_file():
            raise ConfigError(f"No config file at {path}")
        return path
    hint = difflib.get_close_matches(text, known_configs(), n=1)
    did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
    raise ConfigError(
        f"Unknown config '{text}'.{did_you_mean} Known configs: {', '.join(known_configs())}; "
        "or give the path of a .yml file."
    )


def _set_dotted(data: dict, dotted: str, value: Any, name: str, prefix: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ConfigError(_unknown_key_message(name, prefix, part, node))
        node, prefix = node[part], f"{prefix}{part}."
    if leaf not in node:
        raise ConfigError(_unknown_key_message(name, prefix, leaf, node))
    node[leaf] = _coerce(node[leaf], value, f"{prefix}{leaf}", name)


def _coerce(old: Any, new: Any, key: str, name: str) -> Any:
    where = f"'{key}' of config {name}"
    if isinstance(old, dict):
        raise ConfigError(f"{where} is a section; set its keys one by one ('{key}.<key>')")
    if isinstance(new, str) and not isinstance(old, str) and old is not None:
        try:
            new = yaml.safe_load(new)
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: cannot read {new!r} as a value: {err}") from err
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, (int, float)):
        ok = isinstance(new, (int, float))
        if ok and isinstance(old, float):
            new = float(new)
    else:
        ok = isinstance(new, type(old))
    if not ok:
        raise ConfigError(
            f"{where} is {type(old).__name__} ({old!r}); got {type(new).__name__} {new!r}"
        )
    return new


def _unknown_key_message(name: str, prefix: str, key: str, node: Mapping) -> str:
    keys = [str(k) for k in node]
    hint = difflib.get_close_matches(key, keys, n=1)
    did_you_mean = f" Did you mean '{prefix}{hint[0]}'?" if hint else ""
    where = f"'{prefix[:-1]}'" if prefix else "the top level"
    return (
        f"Unknown key '{prefix}{key}' in config {name}.{did_you_mean} "
        f"Keys at {where}: {', '.join(sorted(keys))}"
    )
