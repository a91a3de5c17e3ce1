"""One call per training run: resolve the config, check the inputs, build the stage, train."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rsisr.atomic import write_text
from rsisr.errors import CheckpointError, ConfigError, InputError
from rsisr.training.sections import GPU_WORKERS

log = logging.getLogger(__name__)


def train(
    stage: str,
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    val: str | os.PathLike | None = None,
    ae: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    preset: str | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    sets: Sequence[str] | Mapping[str, Any] = (),
    flags: Mapping[str, Any] | None = None,
    resume: bool = False,
    strict_data: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> Path:
    """Train stage ``ae`` or ``lcm`` into the run directory ``out``; returns ``out/model.safetensors``.

    ``ae``: stage 2's autoencoder. ``init``: stage 1's starting autoencoder (``ae.init``).

    ``flags``: dotted config keys set by dedicated options (e.g. ``{"ae.batch_size": 4}``);
    ``sets``: ``key=value`` strings or a mapping of dotted keys. See :mod:`rsisr.training.config`.
    ``strict_data``: an unreadable image is an error instead of being skipped with a warning.
    Raises :class:`~rsisr.errors.RsisrError` subclasses for every input a user can get wrong.
    """
    import torch

    from rsisr.evaluation.perceptual import metric_weights_dir
    from rsisr.training.state import prepare_run_dir

    out = Path(out)
    prepare_run_dir(out, resume)
    stored = _stored_config(out, stage) if resume else None
    flags = dict(flags or {})
    if data is not None:
        flags["data.train"] = str(Path(data).resolve())
    if val is not None:
        flags["data.val"] = str(Path(val).resolve())
    cfg, autoencoder = _resolve(stage, stored, ae=ae, init=init, preset=preset, config_files=config_files,
                                sets=sets, flags=flags)
    if resume:
        _check_resumable(out, stage, stored, cfg)
    # Data, weights and device before anything is written, so bad input leaves no run directory behind.
    images = _images(cfg, strict_data)
    metric_weights = metric_weights_dir(cfg.run.metric_weights)
    if stage == "ae":
        _check_perceptual(cfg, metric_weights)
    cfg, device = _device(cfg)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    try:
        with _log_to_file(out / "train.log"):
            return _run(cfg, out, resume, images, device, autoencoder, progress, callback, metric_weights)
    finally:
        torch.set_num_threads(threads)


def _check_perceptual(cfg, metric_weights) -> None:
    """Stage 1's LPIPS term: three of the model's bands as RGB and its weight files, when it is on."""
    from rsisr.training.ae import check_perceptual_weights, perceptual_bands

    perceptual_bands(cfg)
    check_perceptual_weights(cfg.ae.perceptual_weight, metric_weights)


def _stored_config(out: Path, stage: str) -> dict[str, Any]:
    """The ``config.yaml`` of the run being resumed, which must be of ``stage``."""
    import yaml

    stored = yaml.safe_load((out / "config.yaml").read_text())
    if not isinstance(stored, dict) or stored.get("stage") != stage:
        raise ConfigError(
            f"--resume: {out} holds a run of stage {stored.get('stage') if isinstance(stored, dict) else '?'}, "
            f"not {stage}"
        )
    return stored


def _resolve(stage: str, stored: Mapping[str, Any] | None, *, ae, init, preset, config_files, sets, flags):
    """The run's configuration, resolved once, and the stage-1 autoencoder it builds on (stage 2's
    ``--ae``; stage 1's ``--init`` or ``ae.init``), or None."""
    from rsisr.training import config as tconfig

    set_map = tconfig.parse_set(sets) if not isinstance(sets, Mapping) else dict(sets)
    files = [tconfig.load_config_file(f) for f in config_files]
    overrides = tconfig.collect_overrides(stage, files=files, sets=set_map, flags=flags)
    stored_section = (stored or {}).get(stage, {})
    if stage == "lcm":
        path = ae if ae is not None else stored_section.get("ae")
        if not path:
            raise InputError("rsisr train lcm needs --ae PATH: the model.safetensors of an `rsisr train ae` run")
    else:
        path = init if init is not None else overrides.get("ae.init", stored_section.get("init"))
        lcm = overrides.get("ae.lcm", stored_section.get("lcm"))
        if lcm and not path:
            return _resolve_lcm_decoder(lcm, stored, overrides, preset)
    autoencoder = None
    if path:
        autoencoder, overrides[f"{stage}.{'ae' if stage == 'lcm' else 'init'}"] = _load_stage1(path)
    cfg = tconfig.from_overrides(stage, overrides, base=stored, preset=preset,
                                 base_model=autoencoder.full_config if autoencoder is not None else None)
    if autoencoder is not None and (cfg.model.bands, cfg.model.scaling) != (autoencoder.full_config.bands,
                                                                             autoencoder.full_config.scaling):
        full = autoencoder.full_config
        raise ConfigError(
            f"model.bands/model.scaling ({cfg.model.bands}, {cfg.model.scaling or 'none'!r}) differ from the autoencoder "
            f"in {'--ae' if stage == 'lcm' else '--init'} ({full.bands}, {full.scaling or 'none'!r}); drop those overrides"
        )
    if autoencoder is not None and cfg.model.autoencoder != autoencoder.config:
        option, why = (("--ae", "stage 2 uses the stage-1 model as trained") if stage == "lcm" else
                       ("--init", "fine-tuning keeps the architecture"))
        raise ConfigError(
            f"model.autoencoder differs from the autoencoder in {option}; {why}: drop the model.autoencoder "
            "overrides (and --preset, or use the preset the autoencoder was trained with)"
        )
    return cfg, autoencoder


def _resolve_lcm_decoder(path, stored, overrides, preset):
    """``rsisr train ae --lcm``: the config and the stage-2 model whose decoder the run fine-tunes."""
    from rsisr.checkpoint import load_model
    from rsisr.training import config as tconfig

    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if not path.is_file():
        raise InputError(f"--lcm {path}: no such file; give the model.safetensors of an `rsisr train lcm` run")
    model = load_model(path)
    overrides["ae.lcm"] = str(path.resolve())
    cfg = tconfig.from_overrides("ae", overrides, base=stored, preset=preset, base_model=model.config)
    if cfg.model != model.config:
        raise ConfigError(f"the model config differs from the stage-2 model in --lcm {path}; its decoder is "
                          "fine-tuned as it is: drop the model overrides (and --preset)")
    return cfg, model


def _check_resumable(out: Path, stage: str, stored: Mapping[str, Any], cfg) -> None:
    """A resumed run keeps its settings, but for the ``run`` section and the run's length."""
    from rsisr.training import config as tconfig

    # The stored config with today's defaults for keys added since it was written, so a run
    # started by an older rsisr resumes unless a setting really changed.
    stored_now = tconfig.resolve(stage, base=stored).to_dict()
    diffs = tconfig.config_differences(stored_now, cfg.to_dict())
    if diffs:
        key, was, now = diffs[0]
        raise ConfigError(
            f"--resume: {out} was started with {key}={was!r}, this command gives {key}={now!r}"
            f"{f' (and {len(diffs) - 1} more differences)' if len(diffs) > 1 else ''}; "
            "resume with the run's own config or start a new --out"
        )


@dataclasses.dataclass
class _Images:
    """The scanned training folder and the training and validation images."""

    scan: Any  # rsisr.training.data.FolderScan
    train: list
    val: list


def _images(cfg, strict_data: bool) -> _Images:
    """Scan ``data.train`` (and ``data.val``, else hold out ``data.val_fraction`` of it)."""
    from rsisr.training.data import scan_folder, split

    if not cfg.data.train:
        raise InputError("--data is needed: a folder of training images")
    scan = scan_folder(cfg.data.train, cfg.data.crop, cfg.data.scale, strict=strict_data, model=cfg.model)
    if not cfg.data.val:
        return _Images(scan, *split(scan.images, cfg.data.train, cfg.data.val_fraction))
    try:
        val_images = scan_folder(cfg.data.val, cfg.data.crop, cfg.data.scale, strict=strict_data, model=cfg.model).images
    except InputError as exc:
        raise InputError(f"--val: {exc}") from None
    return _Images(scan, scan.images, val_images)


def _device(cfg):
    """``run.device``, and the config with ``run.precision`` ``auto`` resolved for it."""
    from rsisr.device import resolve_device, resolve_precision

    device = resolve_device(cfg.run.device)
    if cfg.run.precision == "auto":
        precision = resolve_precision("auto", device)
        log.info("run.precision auto: %s on %s", precision, device)
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, precision=precision))
    if cfg.run.precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 training needs CUDA; use --precision bf16 or fp32 on the CPU")
    return cfg, device


@contextlib.contextmanager
def _log_to_file(path: Path):
    """Log INFO and above of the ``rsisr`` logger to ``path`` while the other handlers keep the
    level the caller chose (records below it are not passed on)."""
    rsisr_log = logging.getLogger("rsisr")
    previous = (rsisr_log.level, rsisr_log.propagate)
    console_level = rsisr_log.getEffectiveLevel()
    file_handler = _RunLog(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    forward = _Forward(console_level)
    rsisr_log.addHandler(file_handler)
    if previous[1]:
        rsisr_log.addHandler(forward)
    rsisr_log.setLevel(min(console_level, logging.INFO))
    rsisr_log.propagate = False
    try:
        yield
    finally:
        rsisr_log.removeHandler(file_handler)
        rsisr_log.removeHandler(forward)
        rsisr_log.setLevel(previous[0])
        rsisr_log.propagate = previous[1]
        file_handler.close()


def _load_stage1(path: str | os.PathLike):
    """The autoencoder of ``--ae`` / ``--init`` (a file or an ``rsisr train ae`` run directory) and
    its file's resolved path."""
    from rsisr.checkpoint import load_autoencoder

    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    return load_autoencoder(path), str(path.resolve())


class _RunLog(logging.FileHandler):
    """train.log. A record that cannot be written (a full disk) is dropped without the
    traceback logging would print for each one: the next checkpoint's OutputError says why."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _Forward(logging.Handler):
    """Pass records at or above ``level`` on to the root logger's handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


def _run(cfg, out: Path, resume: bool, images: _Images, device, autoencoder, progress: bool, callback,
         metric_weights) -> Path:
    """Write config.yaml, build the stage's trainer (from the last checkpoint on resume) and fit it."""
    from rsisr.training.data import CropDataset, load_val_set, make_loader
    from rsisr.training.loop import fit
    from rsisr.training.state import seed_everything

    s = cfg.stage_config
    total_steps = cfg.total_steps(len(images.train))
    _log_images(cfg, images, total_steps, device)
    config_yaml = cfg.to_yaml()
    write_text(out / "config.yaml", config_yaml, "run configuration")
    seed_everything(cfg.train.seed)
    dataset = CropDataset(images.train, cfg.data.crop, cfg.train.seed, cfg.data.min_valid, cfg.data.hr_scales)
    trainer = _trainer(cfg, device, total_steps, autoencoder, metric_weights)
    start_step = _resume(trainer, out, total_steps) if resume else 0
    if cfg.stage == "lcm":
        from rsisr.checkpoint import file_sha256

        if not resume:
            scale_data = CropDataset(images.train, cfg.data.crop, cfg.train.seed + 7, cfg.data.min_valid,
                                     cfg.data.hr_scales)
            scale_loader = make_loader(scale_data, s.batch_size, 0, 0, False)
            trainer.measure_scale(next(scale_loader) for _ in range(s.scale_batches))
        trainer.ae_sha256 = file_sha256(cfg.lcm.ae)
    workers = cfg.run.workers
    if workers is None:
        workers = 0 if device.type == "cpu" else min(GPU_WORKERS, os.cpu_count() or 1)
    loader = make_loader(dataset, s.batch_size, start_step * s.batch_size, workers, device.type == "cuda")
    return fit(
        trainer, run_dir=out, loader=loader, start_step=start_step, total_steps=total_steps,
        batch_size=s.batch_size, n_train=len(images.train), val_hr=load_val_set(images.val, cfg.data.crop,
                                                                                 cfg.data.val_images),
        config_yaml=config_yaml, train_cfg=cfg.train, progress=progress, callback=callback,
        metric_weights=metric_weights,
    )


def _log_images(cfg, images: _Images, total_steps: int, device) -> None:
    scan = images.scan
    for path, why in scan.skipped:  # named once on the console by the scan; here in train.log
        log.info("skipped unreadable image %s: %s", path, why)
    if scan.unreadable:
        log.warning("%d unreadable images in %s were skipped", scan.unreadable, cfg.data.train)
    log.info("%d training images, %d validation images (%d unreadable and %d smaller than the crop skipped); "
             "%d steps of batch %d on %s", len(images.train), len(images.val), scan.unreadable, scan.too_small,
             total_steps, cfg.stage_config.batch_size, device)


def _trainer(cfg, device, total_steps: int, autoencoder, metric_weights):
    if cfg.stage == "ae":
        from rsisr.training.ae import AETrainer

        # With ae.lcm, ``autoencoder`` is the stage-2 model whose decoder is fine-tuned.
        stage2 = cfg.ae.lcm and autoencoder is not None
        return AETrainer(cfg, device, total_steps, init=None if stage2 else autoencoder,
                         metric_weights=metric_weights, lcm=autoencoder if stage2 else None)
    from rsisr.training.lcm import LCMTrainer

    return LCMTrainer(cfg, device, autoencoder)


def _resume(trainer, out: Path, total_steps: int) -> int:
    """Load the run's last checkpoint into ``trainer`` and the RNGs; returns its step."""
    from rsisr.checkpoint import file_sha256
    from rsisr.training.state import latest_checkpoint, load_checkpoint, set_rng_state

    path = latest_checkpoint(out)
    state = load_checkpoint(path)
    if trainer.stage == "lcm" and state["trainer"].get("ae_sha256") not in (None, file_sha256(trainer.cfg.lcm.ae)):
        raise CheckpointError(f"--ae {trainer.cfg.lcm.ae} has changed since this run started; "
                              "resume with the original file")
    trainer.load_state_dict(state["trainer"])
    set_rng_state(state["rng"])
    step = int(state["step"])
    log.info("resuming from %s (step %d of %d)", path, step, total_steps)
    return step
