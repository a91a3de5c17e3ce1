"""Training configuration: the model config plus one frozen dataclass per training section.

A run's configuration is resolved in this order, each layer over the previous one:

1. defaults (these dataclasses; the model from ``--preset``, ``small`` unless given);
   on ``--resume``, the run directory's stored ``config.yaml`` instead;
2. ``--config FILE`` (YAML or JSON, nested sections or dotted keys);
3. ``--set key=value`` (dotted keys, e.g. ``data.crop=128`` or ``model.unet.ch=32``);
4. the dedicated command-line flags (``--batch-size``, ``--lr``, ``--max-steps``, ...).

Sections: ``model`` (:class:`~rsisr.config.ModelConfig`), ``data``, ``train``, the stage's own
``ae`` or ``lcm`` section, and ``run`` (where and how fast it runs; never affects the numbers
on one machine, so a resumed run may change it). A key that exists nowhere is an error naming
it. A key without a section is accepted where exactly one section has it (``crop`` ->
``data.crop``, ``unet.ch`` -> ``model.unet.ch``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rsisr.config import ModelConfig, PRESETS, coerce_value, get_preset
from rsisr.errors import ConfigError

STAGES = ("ae", "lcm")
MODEL_SECTIONS = ("autoencoder", "condnet", "unet", "diffusion")


@dataclass(frozen=True)
class DataConfig:
    """Training images: random HR crops, LR made on the fly by :func:`rsisr.imageops.bicubic_down`."""

    #: Folder of training images (PNG, JPEG, TIFF, GeoTIFF), searched recursively.
    train: str = ""
    #: Validation folder; empty: a fixed held-out share of ``train`` (``val_fraction``).
    val: str = ""
    #: HR crop side in pixels (a multiple of 32: LR = crop/4 must be a multiple of 8).
    crop: int = 256
    #: Share of ``train`` held out for validation when ``val`` is empty (by a hash of the file name).
    val_fraction: float = 0.05
    #: At most this many validation images (centre crops of ``crop``) are scored.
    val_images: int = 16
    #: Value scaling of non-uint8 rasters, as ``rsisr upscale --scale``: auto | none | MIN,MAX.
    scale: str = "auto"
    #: A random GeoTIFF window is redrawn (up to 10 times) while fewer of its pixels are valid.
    min_valid: float = 0.9
    #: HR targets at these integer scales: each sample draws one factor f (among those whose
    #: crop * f window fits the image) and averages a (crop * f)^2 window down by f (area). (1,)
    #: = the images as they are. (1, 2) adds cleaner, coarser targets: 2x area averaging removes
    #: most JPEG blocking (DF2K's "multi-scale" data, DESIGN.md).
    hr_scales: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if not self.hr_scales or any(int(f) != f or f < 1 for f in self.hr_scales):
            raise ConfigError(f"data.hr_scales must be a list of positive integers, got {list(self.hr_scales)}")
        if self.crop <= 0 or self.crop % 32:
            raise ConfigError(f"data.crop must be a positive multiple of 32 (LR sides multiples of 8), got {self.crop}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_images < 0:
            raise ConfigError(f"data.val_images must be >= 0, got {self.val_images}")
        if not 0.0 <= self.min_valid <= 1.0:
            raise ConfigError(f"data.min_valid must be in [0, 1], got {self.min_valid}")
        from rsisr.errors import InputError
        from rsisr.radiometry import parse_scale

        try:
            parse_scale(self.scale)
        except InputError as exc:
            raise ConfigError(f"data.scale: {exc}") from None


@dataclass(frozen=True)
class TrainConfig:
    """What both stages share: seed and the logging / validation / checkpoint cadence (steps)."""

    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    checkpoint_every: int = 500
    #: Older training checkpoints are deleted beyond this many.
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for name in ("log_every", "val_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")


def _check_length(section: str, batch_size: int, lr: float, max_steps: int | None, epochs: float | None) -> None:
    if batch_size <= 0:
        raise ConfigError(f"{section}.batch_size must be positive, got {batch_size}")
    if not lr > 0:
        raise ConfigError(f"{section}.lr must be positive, got {lr}")
    if max_steps is not None and epochs is not None:
        raise ConfigError(f"give {section}.max_steps or {section}.epochs, not both (set the other to null)")
    if max_steps is None and epochs is None:
        raise ConfigError(f"{section}.max_steps or {section}.epochs is needed")
    if max_steps is not None and max_steps <= 0:
        raise ConfigError(f"{section}.max_steps must be positive, got {max_steps}")
    if epochs is not None and not epochs > 0:
        raise ConfigError(f"{section}.epochs must be positive, got {epochs}")


@dataclass(frozen=True)
class AEStageConfig:
    """Stage 1 (DESIGN.md): L1 first, then L1 + KL + adversarial (PatchGAN, hinge, adaptive weight).

    Loss scale follows the LDM reference: the L1 term is summed over (C, H, W) and averaged over
    the batch, the KL term likewise (so ``kl_weight`` 1e-6 means what it means there).
    """

    batch_size: int = 8
    #: Adam, paper: 3.6e-5 at batch 8; betas (0.5, 0.9) from the reference.
    lr: float = 3.6e-5
    betas: tuple[float, ...] = (0.5, 0.9)
    max_steps: int | None = None
    #: Paper: 200 epochs.
    epochs: float | None = 200.0
    #: Steps of L1 only before KL and the adversarial term join; null: a quarter of the run
    #: (paper: the first 50 of 200 epochs).
    disc_start: int | None = None
    kl_weight: float = 1e-6
    #: Factor on the LDM adaptive adversarial weight (paper: 0.5).
    adv_weight: float = 0.5
    disc_layers: int = 3
    disc_channels: int = 64
    #: Discriminator learning rate; null: the same as ``lr``.
    disc_lr: float | None = None
    #: LPIPS(VGG) perceptual term (the reference's, not the paper's); 0 = off. Needs the metric
    #: weights folder (``--metric-weights DIR`` / $RSISR_METRIC_WEIGHTS): vgg16_features.pth and
    #: lpips_v0.1_vgg.pth, written by ``../shared/tools/metric-weights DIR``; never downloaded.
    perceptual_weight: float = 0.0
    #: VGG16 feature levels of the perceptual term: 5 = LPIPS as published; fewer = a cheaper
    #: loss (3 stops at relu3_3, the last two slices are not run).
    perceptual_layers: int = 5
    #: Start from this autoencoder (``model.safetensors`` of an ``rsisr train ae`` run) instead of
    #: random weights; its model config is used. ``rsisr train ae --init``.
    init: str = ""
    #: false: the encoder (and so the latent space) stays as ``init`` left it and only the decoder
    #: learns, as in decoder-only VAE fine-tuning; a stage-2 model trained on ``init`` stays valid.
    train_encoder: bool = True

    def __post_init__(self) -> None:
        _check_length("ae", self.batch_size, self.lr, self.max_steps, self.epochs)
        if len(self.betas) != 2:
            raise ConfigError(f"ae.betas must have two entries, got {self.betas!r}")
        if self.disc_start is not None and self.disc_start < 0:
            raise ConfigError(f"ae.disc_start must be >= 0, got {self.disc_start}")
        for name in ("kl_weight", "adv_weight", "perceptual_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ae.{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.perceptual_layers <= 5:
            raise ConfigError(f"ae.perceptual_layers must be 1 to 5 (VGG16 feature levels), got {self.perceptual_layers}")
        if self.disc_layers <= 0 or self.disc_channels <= 0:
            raise ConfigError("ae.disc_layers and ae.disc_channels must be positive")
        if not self.train_encoder and not self.init:
            raise ConfigError(
                "ae.train_encoder=false freezes a trained encoder: give the autoencoder to start from "
                "with --init PATH (or ae.init)"
            )


@dataclass(frozen=True)
class LCMStageConfig:
    """Stage 2 (DESIGN.md, paper Algorithm 1): L_CT (Eq. 9) + L_KD (Eq. 5), EMA target network."""

    #: The stage-1 autoencoder (``model.safetensors`` of an ``rsisr train ae`` run).
    ae: str = ""
    batch_size: int = 16
    #: AdamW, paper: 8e-5 at batch 16.
    lr: float = 8e-5
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.01
    max_steps: int | None = None
    epochs: float | None = 200.0
    #: EMA of CondNet and UNet; warm-up min(decay, (1 + n) / (10 + n)) (reference).
    ema_decay: float = 0.9999
    #: False: the "w/o KD" ablation of Table III.
    kd: bool = True
    kd_weight: float = 1.0
    #: False: the "w/o consistency" ablation: L1(f_theta(z_t, c, t), z0) instead of L_CT.
    consistency: bool = True
    #: Batches of training latents whose std sets the scale factor (LDM scale_by_std).
    scale_batches: int = 4
    #: z0 = a posterior sample (LDM's get_first_stage_encoding, the reference) or its mode (mean).
    latent: str = "sample"

    def __post_init__(self) -> None:
        _check_length("lcm", self.batch_size, self.lr, self.max_steps, self.epochs)
        if len(self.betas) != 2:
            raise ConfigError(f"lcm.betas must have two entries, got {self.betas!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"lcm.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.scale_batches <= 0:
            raise ConfigError(f"lcm.scale_batches must be positive, got {self.scale_batches}")
        if self.weight_decay < 0 or self.kd_weight < 0:
            raise ConfigError("lcm.weight_decay and lcm.kd_weight must be >= 0")
        if self.latent not in ("sample", "mode"):
            raise ConfigError(f"lcm.latent must be sample or mode, got {self.latent!r}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how fast: may change on ``--resume`` (the numbers on one machine do not depend on it)."""

    device: str = "auto"
    #: fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler) | auto: bf16 where the device
    #: runs it natively (checked at run time: CUDA with bf16, a CPU with AVX512-BF16 or AMX), else fp32.
    precision: str = "fp32"
    #: Loader worker processes; null: 0 on the CPU, up to 8 on a GPU.
    workers: int | None = None
    #: torch.compile the training forward passes.
    compile: bool = False
    #: channels_last memory format; null: on CUDA only (where it helps convolutions).
    channels_last: bool | None = None
    #: CPU threads of torch (torch.set_num_threads); null: torch's default. On a CPU shared with
    #: other jobs, fewer threads than cores avoid oversubscription. Results on the CPU may
    #: differ in the last bits between thread counts.
    threads: int | None = None
    #: Folder of metric weights (``../shared/tools/metric-weights DIR``): validation LPIPS in
    #: metrics.csv and the LPIPS(VGG) loss; null: $RSISR_METRIC_WEIGHTS, else PSNR/SSIM only.
    metric_weights: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"run.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"run.workers must be >= 0, got {self.workers}")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"run.threads must be positive, got {self.threads}")


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

    # Model: the preset (or the stored / autoencoder's model), then dotted model overrides.
    model_over = {k[len("model."):]: v for k, v in overrides.items() if k.startswith("model.")}
    preset_name = preset or model_over.pop("preset", None)
    model_over.pop("preset", None)
    if preset_name is not None:
        if preset_name not in PRESETS:
            get_preset(str(preset_name))  # raises the naming error
        model = get_preset(preset_name)
    elif base is not None and "model" in base:
        model = ModelConfig.from_dict(base["model"])
    elif base_model is not None:
        model = base_model
    else:
        model = get_preset("small")
    if model_over:
        model = model.replace(model_over)

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
        if _norm(a.get(key)) != _norm(b.get(key)):
            diffs.append((key, a.get(key), b.get(key)))
    return diffs


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
