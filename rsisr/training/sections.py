"""One frozen dataclass per section of a training configuration (``data``, ``train``, ``ae``,
``lcm``, ``run``); :class:`rsisr.training.config.TrainingConfig` composes them with the model's.

Each checks its own values on construction: a bad value is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsisr import defaults
from rsisr.errors import ConfigError

#: Values of ``run.precision`` (``rsisr train --precision``): ``auto`` picks one at run time.
PRECISIONS = ("auto", *defaults.PRECISIONS)
#: Loader worker processes on a GPU when ``run.workers`` is null (at most; fewer on fewer cores).
GPU_WORKERS = 8
#: Training length of both stages in the paper (``ae.epochs``, ``lcm.epochs``).
PAPER_EPOCHS = 200.0
#: Values of ``lcm.latent``.
LATENTS = ("sample", "mode")


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
    #: Unused since crops hold only valid pixels (GeoTIFF windows are drawn where no pixel is
    #: nodata or masked); kept so that older configurations still load.
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
    epochs: float | None = PAPER_EPOCHS
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
    #: The model's bands (1-based) that the perceptual term sees as red, green and blue, e.g.
    #: [3, 2, 1] for Sentinel-2's B4, B3, B2 stored as bands 1-3 = B2, B3, B4; empty: the model's
    #: ``rgb_bands`` (1, 2, 3 for a 3-band model). A model with no such bands cannot use the term.
    perceptual_bands: tuple[int, ...] = ()
    #: Start from this autoencoder (``model.safetensors`` of an ``rsisr train ae`` run) instead of
    #: random weights; its model config is used. ``rsisr train ae --init``.
    init: str = ""
    #: false: the encoder (and so the latent space) stays as ``init`` left it and only the decoder
    #: learns, as in decoder-only VAE fine-tuning; a stage-2 model trained on ``init`` stays valid.
    train_encoder: bool = True
    #: Fine-tune the decoder of this stage-2 model (``model.safetensors`` of an ``rsisr train lcm``
    #: run) on the latents it predicts in one step from the LR input; its CondNet and UNet stay
    #: frozen and the run exports it with the new decoder. ``rsisr train ae --lcm``.
    lcm: str = ""
    #: With ``ae.lcm``: also fine-tune that model's CondNet and UNet, end to end through the
    #: decoder on the same losses (the one-step output against the HR crop), instead of keeping
    #: them frozen. Outputs with ``--steps`` > 1 are then no longer what stage 2 trained.
    lcm_unet: bool = False

    def __post_init__(self) -> None:
        _check_length("ae", self.batch_size, self.lr, self.max_steps, self.epochs)
        if len(self.betas) != 2:
            raise ConfigError(f"ae.betas must have two entries, got {self.betas!r}")
        if self.disc_start is not None and self.disc_start < 0:
            raise ConfigError(f"ae.disc_start must be >= 0, got {self.disc_start}")
        for name in ("kl_weight", "adv_weight", "perceptual_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ae.{name} must be >= 0, got {getattr(self, name)}")
        if self.perceptual_bands and (len(self.perceptual_bands) != 3 or min(self.perceptual_bands) < 1):
            raise ConfigError(f"ae.perceptual_bands must be three 1-based bands (red, green, blue), e.g. [3, 2, 1], "
                              f"got {list(self.perceptual_bands)}")
        if not 1 <= self.perceptual_layers <= 5:
            raise ConfigError(f"ae.perceptual_layers must be 1 to 5 (VGG16 feature levels), got {self.perceptual_layers}")
        if self.disc_layers <= 0 or self.disc_channels <= 0:
            raise ConfigError("ae.disc_layers and ae.disc_channels must be positive")
        if self.lcm and self.init:
            raise ConfigError("ae.lcm fine-tunes the decoder of a stage-2 model, ae.init starts from an autoencoder: "
                              "give one of --lcm and --init")
        if self.lcm_unet and not self.lcm:
            raise ConfigError("ae.lcm_unet fine-tunes the UNet of a stage-2 model: give that model with --lcm PATH "
                              "(or ae.lcm), or set ae.lcm_unet=false")
        if not self.train_encoder and not self.init and not self.lcm:
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
    epochs: float | None = PAPER_EPOCHS
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
        if self.latent not in LATENTS:
            raise ConfigError(f"lcm.latent must be {' or '.join(LATENTS)}, got {self.latent!r}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how fast: may change on ``--resume`` (the numbers on one machine do not depend on it)."""

    device: str = "auto"
    #: fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler) | auto: bf16 where the device
    #: runs it natively (checked at run time: CUDA with bf16, a CPU with AVX512-BF16 or AMX), else fp32.
    precision: str = "fp32"
    #: Loader worker processes; null: 0 on the CPU, up to ``GPU_WORKERS`` on a GPU.
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
        if self.precision not in PRECISIONS:
            raise ConfigError(f"run.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"run.workers must be >= 0, got {self.workers}")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"run.threads must be positive, got {self.threads}")
