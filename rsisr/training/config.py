"""Training configuration: the model config plus one frozen dataclass per training section.

A run's configuration is resolved in this order, each layer over the previous one:

1. defaults (the section dataclasses; the model from ``--preset``, ``small`` unless given);
   on ``--resume``, the run directory's stored ``config.yaml`` instead;
2. ``--config FILE`` (YAML or JSON, nested sections or dotted keys);
3. ``--set key=value`` (dotted keys, e.g. ``data.crop=128`` or ``model.unet.ch=32``);
4. the dedicated command-line flags (``--batch-size``, ``--lr``, ``--max-steps``, ...).

Sections: ``model`` (:class:`~rsisr.config.ModelConfig`), ``data``, ``train``, the stage's own
``ae`` or ``lcm`` section, and ``run`` (where and how fast it runs; never affects the numbers on
one machine, so a resumed run may change it); :mod:`rsisr.training.sections` defines them. A key that exists nowhere is an error naming
it. A key without a section is accepted where exactly one section has it (``crop`` ->
``data.crop``, ``unet.ch`` -> ``model.unet.ch``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rsisr.config import ModelConfig, PRESETS, coerce_value, get_preset
from rsisr.errors import ConfigError
from rsisr.training.sections import AEStageConfig, DataConfig, LCMStageConfig, RunConfig, TrainConfig

STAGES = ("ae", "lcm")
MODEL_SECTIONS = ("autoencoder", "condnet", "unet", "diffusion")
#: The model preset of a stage-1 run that names none (stage 2 takes its autoencoder's).
DEFAULT_PRESET = "small"

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "ae": AEStageConfig,
    "lcm": LCMStageConfig,
    "run": RunConfig,
}


@dataclass(frozen=True)
class TrainingConfig:
    """The resolved configuration of one run (one stage)."""

    stage: str
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ae: AEStageConfig = field(default_factory=AEStageConfig)
    lcm: LCMStageConfig = field(default_factory=LCMStageConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def stage_config(self) -> AEStageConfig | LCMStageConfig:
        return self.ae if self.stage == "ae" else self.lcm

    def total_steps(self, n_train: int) -> int:
        """``max_steps``, or the steps that make ``epochs`` passes over ``n_train`` images."""
        s = self.stage_config
        if s.max_steps is not None:
            return s.max_steps
        return max(1, math.ceil(s.epochs * n_train / s.batch_size))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict; only the run's own stage section is included."""
        out: dict[str, Any] = {"stage": self.stage, "model": self.model.to_dict()}
        for name in ("data", "train", self.stage, "run"):
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Reading and merging


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file as a mapping; errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"config file {path} is not valid {kind}: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return dict(data)


def parse_set(items: typing.Iterable[str]) -> dict[str, Any]:
    """``["data.crop=128", "lcm.kd=false"]`` -> ``{"data.crop": 128, "lcm.kd": False}`` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r} (e.g. --set data.crop=128)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        out[key] = value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections -> dotted keys. Keys that are already dotted are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _section_fields() -> dict[str, set[str]]:
    return {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}


def canonical_key(key: str, stage: str) -> str:
    """Full dotted name of ``key``; raises ConfigError naming an unknown or ambiguous key."""
    parts = key.split(".")
    fields = _section_fields()
    if parts[0] == "model" or parts[0] in MODEL_SECTIONS or (len(parts) == 1 and parts[0] == "preset"):
        full = key if parts[0] == "model" else f"model.{key}"
        _check_model_key(full)
        return full
    if parts[0] in fields:
        if len(parts) != 2 or parts[1] not in fields[parts[0]]:
            raise ConfigError(
                f"unknown config key {key!r}; valid keys in {parts[0]}: {', '.join(sorted(fields[parts[0]]))}"
            )
        return key
    if len(parts) == 1:
        owners = [s for s, names in fields.items() if key in names]
        if len(owners) == 1:
            return f"{owners[0]}.{key}"
        if owners:
            preferred = [s for s in owners if s == stage]
            if preferred:
                return f"{stage}.{key}"
            raise ConfigError(f"config key {key!r} is ambiguous; write one of: {', '.join(f'{s}.{key}' for s in owners)}")
    raise ConfigError(
        f"unknown config key {key!r}; sections are model, {', '.join(SECTIONS)} "
        "(e.g. data.crop, ae.lr, model.unet.ch)"
    )


def _check_model_key(full: str) -> None:
    parts = full.split(".")[1:]
    if parts == ["preset"]:
        return
    node: Any = ModelConfig().to_dict()
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown config key {full!r}; model keys look like model.unet.ch")
        node = node[part]
    if isinstance(node, dict):
        raise ConfigError(f"config key {full!r} is a section; give one of its keys, e.g. {full}.ch")


def _build(cls: type, values: Mapping[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce_value(hints[name], value, f"{section}.{name}") for name, value in values.items()}
    return cls(**kwargs)


def collect_overrides(
    stage: str,
    *,
    files: typing.Sequence[Mapping[str, Any]] = (),
    sets: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The layers over the defaults (config files, ``--set``, the dedicated flags; later wins) as
    one mapping of full dotted keys (:func:`canonical_key`). None values of ``flags`` are skipped;
    the other stage's section is checked, not used."""
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}; use ae or lcm")
    overrides: dict[str, Any] = {}
    for layer in [*(flatten(f) for f in files), dict(sets or {}), {k: v for k, v in (flags or {}).items() if v is not None}]:
        for key, value in layer.items():
            if key == "stage":
                if value != stage:
                    raise ConfigError(f"config says stage {value!r}, but this is `rsisr train {stage}`")
                continue
            full = canonical_key(key, stage)
            if full.split(".")[0] == ("lcm" if stage == "ae" else "ae"):
                continue  # one example file serves both stages: the other stage's section is checked, not used
            overrides[full] = value
    return overrides


def resolve(
    stage: str,
    *,
    base: Mapping[str, Any] | None = None,
    preset: str | None = None,
    files: typing.Sequence[Mapping[str, Any]] = (),
    sets: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    base_model: ModelConfig | None = None,
) -> TrainingConfig:
    """Resolve a run's configuration (see the module docstring for the order).

    ``base``: a stored resolved config (``--resume``). ``base_model``: the model to start from
    when no preset is named (stage 2: the autoencoder's). ``flags``: dotted keys from the
    dedicated command-line options; None values are skipped.
    """
    overrides = collect_overrides(stage, files=files, sets=sets, flags=flags)
    return from_overrides(stage, overrides, base=base, preset=preset, base_model=base_model)


def from_overrides(stage: str, overrides: Mapping[str, Any], *, base: Mapping[str, Any] | None = None,
                   preset: str | None = None, base_model: ModelConfig | None = None) -> TrainingConfig:
    """The configuration of :func:`collect_overrides`' ``overrides`` over ``base`` (or the defaults)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}; use ae or lcm")
    model = _model(overrides, base, preset, base_model)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = dict((base or {}).get(name, {})) if name in ("data", "train", "run", stage) else {}
        for full, value in overrides.items():
            sec, _, key = full.partition(".")
            if sec == name:
                values[key] = value
        # Exactly one of max_steps / epochs: the later layer wins.
        if name == stage:
            if "max_steps" in _last_length_key(overrides, stage) and values.get("max_steps") is not None:
                values["epochs"] = None
            elif "epochs" in _last_length_key(overrides, stage) and values.get("epochs") is not None:
                values["max_steps"] = None
        sections[name] = _build(cls, values, name)
    return TrainingConfig(stage=stage, model=model, **sections)


def _model(overrides: Mapping[str, Any], base: Mapping[str, Any] | None, preset: str | None,
           base_model: ModelConfig | None) -> ModelConfig:
    """The preset (or the stored / autoencoder's model), then the dotted ``model.`` overrides. A preset
    keeps the stored / autoencoder's bands, scaling and RGB bands: it names sizes, not the data."""
    model_over = {k[len("model."):]: v for k, v in overrides.items() if k.startswith("model.")}
    preset_name = preset or model_over.pop("preset", None)
    model_over.pop("preset", None)
    before = ModelConfig.from_dict(base["model"]) if base is not None and "model" in base else base_model
    if preset_name is not None:
        if preset_name not in PRESETS:
            get_preset(str(preset_name))  # raises the naming error
        model = get_preset(preset_name)
        if before is not None:  # a preset names sizes; the bands and their scaling are the data's
            model = dataclasses.replace(model, bands=before.bands, scaling=before.scaling, rgb_bands=before.rgb_bands)
    elif before is not None:
        model = before
    else:
        model = get_preset(DEFAULT_PRESET)
    return model.replace(model_over) if model_over else model


def _last_length_key(overrides: Mapping[str, Any], stage: str) -> list[str]:
    """Which of ``{stage}.max_steps`` / ``{stage}.epochs`` was set last (dict order = layer order)."""
    keys = [k.split(".")[1] for k in overrides if k in (f"{stage}.max_steps", f"{stage}.epochs")]
    return keys[-1:]


#: Keys that may differ on ``--resume``: the run section and the run's length.
RESUMABLE_CHANGES = ("run.", "ae.max_steps", "ae.epochs", "lcm.max_steps", "lcm.epochs")


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, stored value, new value) for every key that may not change on resume."""
    a, b = flatten(stored), flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(RESUMABLE_CHANGES) or key == "model.preset":
            continue
        if _norm(a.get(key)) != _norm(b.get(key)) and not _same_file(a.get(key), b.get(key)):
            diffs.append((key, a.get(key), b.get(key)))
    return diffs


def _same_file(a: Any, b: Any) -> bool:
    """Two path settings (stored absolute) that name one file or folder (a run moved behind a
    symlink, say)."""
    if not (isinstance(a, str) and isinstance(b, str) and os.path.isabs(a) and os.path.isabs(b)):
        return False
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
