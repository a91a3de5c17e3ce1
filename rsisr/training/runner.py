"""One call per training run: resolve the config, check the inputs, build the stage, train."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rsisr.atomic import write_text
from rsisr.errors import CheckpointError, ConfigError, InputError

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
    import yaml

    from rsisr.device import resolve_device
    from rsisr.training import common, config as tconfig
    from rsisr.training.data import scan_folder, split

    out = Path(out)
    common.prepare_run_dir(out, resume)
    stored = None
    if resume:
        stored = yaml.safe_load((out / "config.yaml").read_text())
        if not isinstance(stored, dict) or stored.get("stage") != stage:
            raise ConfigError(
                f"--resume: {out} holds a run of stage {stored.get('stage') if isinstance(stored, dict) else '?'}, "
                f"not {stage}"
            )

    flags = dict(flags or {})
    if data is not None:
        flags["data.train"] = str(Path(data).resolve())
    if val is not None:
        flags["data.val"] = str(Path(val).resolve())
    autoencoder = None
    base_model = None
    if stage == "lcm":
        ae_path = ae if ae is not None else (stored or {}).get("lcm", {}).get("ae")
        if not ae_path:
            raise InputError("rsisr train lcm needs --ae PATH: the model.safetensors of an `rsisr train ae` run")
        autoencoder, flags["lcm.ae"] = _load_stage1(ae_path)
        base_model = autoencoder.full_config
    elif init is not None:
        autoencoder, flags["ae.init"] = _load_stage1(init)
        base_model = autoencoder.full_config

    set_map = tconfig.parse_set(sets) if not isinstance(sets, Mapping) else dict(sets)
    files = [tconfig.load_config_file(f) for f in config_files]
    cfg = tconfig.resolve(stage, base=stored, preset=preset, files=files, sets=set_map, flags=flags,
                          base_model=base_model)
    if stage == "ae" and cfg.ae.init and autoencoder is None:
        # ae.init from a config file, --set or the stored config: its model config is the base.
        autoencoder, flags["ae.init"] = _load_stage1(cfg.ae.init)
        cfg = tconfig.resolve(stage, base=stored, preset=preset, files=files, sets=set_map, flags=flags,
                              base_model=autoencoder.full_config)
    if stage == "ae" and autoencoder is not None and cfg.model.autoencoder != autoencoder.config:
        raise ConfigError(
            "model.autoencoder differs from the autoencoder in --init; fine-tuning keeps the architecture: "
            "drop the model.autoencoder overrides (and --preset, or use the preset it was trained with)"
        )
    if stage == "lcm" and cfg.model.autoencoder != autoencoder.config:
        raise ConfigError(
            "model.autoencoder differs from the autoencoder in --ae; stage 2 uses the stage-1 model as "
            "trained: drop the model.autoencoder overrides (and --preset, or use the preset the autoencoder was trained with)"
        )
    if resume:
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
    if not cfg.data.train:
        raise InputError("--data is needed: a folder of training images")

    # Data (before anything is written, so bad input leaves no run directory behind).
    scan = scan_folder(cfg.data.train, cfg.data.crop, cfg.data.scale, strict=strict_data)
    if cfg.data.val:
        train_images = scan.images
        try:
            val_images = scan_folder(cfg.data.val, cfg.data.crop, cfg.data.scale, strict=strict_data).images
        except InputError as exc:
            raise InputError(f"--val: {exc}") from None
    else:
        train_images, val_images = split(scan.images, cfg.data.train, cfg.data.val_fraction)
    total_steps = cfg.total_steps(len(train_images))
    from rsisr.evaluation.perceptual import metric_weights_dir

    metric_weights = metric_weights_dir(cfg.run.metric_weights)
    if stage == "ae":
        from rsisr.training.ae import check_perceptual_weights

        check_perceptual_weights(cfg.ae.perceptual_weight, metric_weights)
    device = resolve_device(cfg.run.device)
    if cfg.run.precision == "auto":
        import dataclasses

        from rsisr.device import resolve_precision

        precision = resolve_precision("auto", device)
        log.info("run.precision auto: %s on %s", precision, device)
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, precision=precision))
    if cfg.run.precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 training needs CUDA; use --precision bf16 or fp32 on the CPU")
    workers = cfg.run.workers if cfg.run.workers is not None else (0 if device.type == "cpu" else min(8, os.cpu_count() or 1))

    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    try:
        with _log_to_file(out / "train.log"):
            return _run(stage, cfg, out, resume, scan, train_images, val_images, total_steps, device, workers,
                        autoencoder, progress, callback, metric_weights)
    finally:
        torch.set_num_threads(threads)


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


def _run(stage, cfg, out, resume, scan, train_images, val_images, total_steps, device, workers, autoencoder,
         progress, callback, metric_weights=None) -> Path:
    from rsisr.checkpoint import file_sha256
    from rsisr.training import common
    from rsisr.training.data import CropDataset, load_val_set, make_loader

    for path, why in scan.skipped:  # named once on the console by the scan; here in train.log
        log.info("skipped unreadable image %s: %s", path, why)
    if scan.unreadable:
        log.warning("%d unreadable images in %s were skipped", scan.unreadable, cfg.data.train)
    log.info("%d training images, %d validation images (%d unreadable and %d smaller than the crop skipped); "
             "%d steps of batch %d on %s", len(train_images), len(val_images), scan.unreadable, scan.too_small,
             total_steps, cfg.stage_config.batch_size, device)
    config_yaml = cfg.to_yaml()
    write_text(out / "config.yaml", config_yaml, "run configuration")
    common.seed_everything(cfg.train.seed)
    s = cfg.stage_config
    dataset = CropDataset(train_images, cfg.data.crop, cfg.train.seed, cfg.data.min_valid, cfg.data.hr_scales)
    if stage == "ae":
        from rsisr.training.ae import AETrainer

        trainer = AETrainer(cfg, device, total_steps, init=autoencoder, metric_weights=metric_weights)
    else:
        from rsisr.training.lcm import LCMTrainer

        trainer = LCMTrainer(cfg, device, autoencoder)
    start_step = 0
    if resume:
        ckpt_path = common.latest_checkpoint(out)
        state = common.load_checkpoint(ckpt_path)
        if stage == "lcm" and state["trainer"].get("ae_sha256") not in (None, file_sha256(cfg.lcm.ae)):
            raise CheckpointError(f"--ae {cfg.lcm.ae} has changed since this run started; resume with the original file")
        trainer.load_state_dict(state["trainer"])
        common.set_rng_state(state["rng"])
        start_step = int(state["step"])
        log.info("resuming from %s (step %d of %d)", ckpt_path, start_step, total_steps)
    elif stage == "lcm":
        scale_loader = make_loader(CropDataset(train_images, cfg.data.crop, cfg.train.seed + 7, cfg.data.min_valid,
                                               cfg.data.hr_scales),
                                   s.batch_size, 0, 0, False)
        trainer.measure_scale(next(scale_loader) for _ in range(s.scale_batches))
    if stage == "lcm":
        trainer.ae_sha256 = file_sha256(cfg.lcm.ae)
    loader = make_loader(dataset, s.batch_size, start_step * s.batch_size, workers, device.type == "cuda")
    val_hr = load_val_set(val_images, cfg.data.crop, cfg.data.val_images)
    return common.fit(
        trainer, run_dir=out, loader=loader, start_step=start_step, total_steps=total_steps,
        batch_size=s.batch_size, n_train=len(train_images), val_hr=val_hr, config_yaml=config_yaml,
        train_cfg=cfg.train, progress=progress, callback=callback, metric_weights=metric_weights,
    )
