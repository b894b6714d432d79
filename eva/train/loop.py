"""The training run: DDP set-up, AdamW + warmup-cosine, epochs with a validation pass, resume, logging.

One run = `run_training(job)`, called by every torchrun process, in named phases:

    _set_up       check the job, open the splits, build model + optimiser, restore a resume file,
                  wrap in DDP (and torch.compile), start the loaders
    _train_epoch  forward/backward/step over the epoch's batches; step metrics read back every
                  METRICS_EVERY steps (`_log_steps`), never per step
    _end_epoch    log the epoch, validate every `train.val_interval` epochs (`evaluate_top1`),
                  write the resume file
    then rank 0 saves model.pt. What a run is given lives in `eva.train.config`, its optimiser's
    parameter groups in `eva.train.optim`.

What makes it reproducible:

* `train.batch_size` is the GLOBAL batch of one forward/backward (split evenly over the processes;
  rounded up to a multiple of them, with the lr scaled alike, where they do not divide it),
  `train.grad_accum` of them make an optimiser step; with the loader's "samples" mode (see
  `eva.data.clips`) the same params give the same batches whatever `train.nproc` is.
* The tunable weights are initialised from `train.seed` on every rank; dropout draws from a
  per-rank seed; data randomness is per video (seed, epoch, video id).
* After every epoch the resume file `checkpoints/<hash>/last.pt` captures weights, optimiser,
  scheduler, grad scaler and every rank's RNG states; a restarted run with the same params and
  data continues from it and writes a model.pt byte-identical to an uninterrupted one's. A run that
  finishes deletes its resume file, so a forced re-run (`dvc repro -f`) trains from scratch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from eva.config import (
    invalid,
)
from eva.data.attribute_store import AttributeStore
from eva.data.clips import (
    Augment,
    ClipSpec,
    VideoAttributeDataset,
    batch_to_device,
    derive_seed,
    make_loader,
    mean_colour,
    open_attribute_store,
    split_size,
    steps_per_epoch,
    warn_host_decode,
)
from eva.methods import get_method
from eva.models import VideoClassifier, build_model
from eva.train.checkpoint import (
    capture_rng_state,
    data_fingerprint,
    load_resume,
    restore_rng_state,
    resume_path,
    save_resume,
    save_trained_model,
)
from eva.train.config import TrainJob, TrainResult
from eva.train.optim import build_optimizer, unused_tunable_parameters
from eva.train.schedule import build_scheduler
from eva.utils.ddp import DistEnv, all_gather_objects, autocast_dtype, init_distributed
from eva.utils.fingerprint import code_fingerprint
from eva.utils.log import progress
from eva.weights_io import weights_fingerprint

log = logging.getLogger(__name__)

METRICS_EVERY = 25  # optimiser steps between read-backs of the training metrics (and at each epoch's end)

# ----------------------------------------------------------------------------- distributed


def _all_reduce(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.world_size > 1:
        dist.all_reduce(tensor)
    return tensor


def _barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier()


def _gather_rng(env: DistEnv) -> list[dict[str, Any]]:
    return all_gather_objects(capture_rng_state(), env.world_size)


# ----------------------------------------------------------------------------- logging


class _Logger:
    """DVCLive on rank 0 (per-step loss/acc/lr, per-epoch train/val loss and accuracy); no-op elsewhere."""

    def __init__(self, live_dir: Path | None, enabled: bool) -> None:
        self.live = None
        if enabled and live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None)

    def step(self, record: Mapping[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = int(record["step"])
        for name in ("loss", "acc", "lr"):
            self.live.log_metric(f"train/{name}", record[name])

    def epoch(self, record: Mapping[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = int(record["step"])
        self.live.log_metric("epoch", int(record["epoch"]))
        self.live.log_metric("train/epoch_loss", record["train_loss"])
        self.live.log_metric("train/epoch_acc", record["train_acc"])
        if "val_acc" in record:  # a validated epoch (`train.val_interval`)
            self.live.log_metric("val/loss", record["val_loss"])
            self.live.log_metric("val/acc", record["val_acc"])
        self.live.make_summary()

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


# ----------------------------------------------------------------------------- the run


def run_training(job: TrainJob) -> TrainResult:
    """Train `job.model` on `job.train_shards`; write `job.output` (rank 0). Call from every process."""
    env, created = init_distributed()
    try:
        return _run(job, env)
    finally:
        if created:
            dist.destroy_process_group()


@dataclass
class _Run:
    """The state one training run carries from epoch to epoch (built by `_set_up`)."""

    job: TrainJob
    env: DistEnv
    model: VideoClassifier
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_batches: Iterator[dict[str, Any]]  # every epoch's batches, from one loader iterator
    val_loader: DataLoader  # iterated once per epoch (its workers persist)
    logger: _Logger
    checkpoint: Path | None
    steps: int  # loader batches per epoch (micro-batches)
    autocast: dict[str, Any]
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    step_log: list[dict[str, float]] = field(default_factory=list)


def _run(job: TrainJob, env: DistEnv) -> TrainResult:
    run = _set_up(job, env)
    for epoch in range(run.start_epoch, job.train.epochs):
        totals = _train_epoch(run, epoch)
        _end_epoch(run, epoch, totals)
    if env.is_main:
        save_trained_model(
            job.output,
            run.model,
            classes=job.classes,
            stage=job.stage,
            params=job.params,
            history=run.history,
        )
        log.info("wrote %s", job.output)
        if run.checkpoint is not None:  # finished: only an interrupted run resumes (`dvc repro -f` retrains)
            shutil.rmtree(run.checkpoint.parent, ignore_errors=True)
    run.logger.end()
    _barrier(env)
    return TrainResult(model=run.model, history=run.history, steps=run.step_log, resumed_from=run.start_epoch)


def _open_splits(
    job: TrainJob, env: DistEnv
) -> tuple[AttributeStore | None, AttributeStore | None, int, int]:
    """The attribute stores of both splits, the loader batches per epoch and the usable val videos;
    logs the split sizes."""
    cfg = job.train
    local_batch = cfg.global_batch // env.world_size
    names = tuple(job.model.attributes)
    train_store = open_attribute_store(job.train_attributes, needed=bool(names), split="train")
    val_store = open_attribute_store(job.val_attributes, needed=bool(names), split="val")
    train_size = split_size(job.train_shards, train_store)
    val_size = split_size(job.val_shards, val_store)
    for split, size in (("train", train_size), ("val", val_size)):
        if size.skipped and env.is_main:
            log.warning(
                "%s: %d of %d videos have no attribute row and are skipped",
                split,
                size.skipped,
                size.in_shards,
            )
    steps = steps_per_epoch(train_size.usable, cfg.global_batch, cfg.grad_accum)
    optimiser_steps = steps // cfg.grad_accum
    if env.is_main and cfg.global_batch != cfg.batch_size:
        log.warning(
            "train.batch_size=%d does not split over %d processes: batch %d (%d each), lr x %.3g "
            "(linear scaling rule)",
            cfg.batch_size, env.world_size, cfg.global_batch, local_batch, cfg.global_batch / cfg.batch_size,
        )  # fmt: skip
    if env.is_main:
        log.info(
            "train: %d videos, val: %d videos; %d processes x batch %d x accumulation %d; %d steps per epoch",
            train_size.usable, val_size.usable, env.world_size, local_batch, cfg.grad_accum, optimiser_steps,
        )  # fmt: skip
    return train_store, val_store, steps, val_size.usable


def _run_identity(job: TrainJob, env: DistEnv) -> dict[str, Any]:
    """Everything that determines the run; its hash names the resume file.

    A run resumes only with the same params, processes, data files, backbone weights and code.
    """
    cfg = job.train
    return {
        "params": job.params,
        "model": asdict(job.model),
        "train": asdict(cfg),
        "stage": job.stage,
        "world_size": env.world_size,
        "data": data_fingerprint(
            [
                *job.train_shards,
                *job.val_shards,
                *[p for p in (job.train_attributes, job.val_attributes) if p],
            ]
        ),
        "weights": weights_fingerprint(job.model.backbone, job.model.pretrained),
        "code": code_fingerprint(),
    }


def _check_job(job: TrainJob, env: DistEnv) -> None:
    """What only the launched processes can check: the batch split, and a backbone lr where it trains."""
    cfg = job.train
    if cfg.global_batch % env.world_size:
        raise invalid(
            "train.nproc",
            f"the number of launched processes ({env.world_size}): the batch of {cfg.global_batch} is "
            f"split for train.nproc={cfg.nproc}",
            cfg.nproc,
        )
    if get_method(job.model.method).trains_backbone and not cfg.recipe.backbone_lr > 0:
        raise invalid(
            f"train.recipes.{cfg.recipe.name}.backbone_lr",
            f"> 0: model.method={job.model.method} trains the backbone",
            cfg.recipe.backbone_lr,
        )
    if cfg.nproc != env.world_size and env.is_main:
        log.warning("train.nproc=%d but %d processes were launched", cfg.nproc, env.world_size)


@dataclass
class _Optimisation:
    """Model, optimiser, schedule, grad scaler and autocast settings: what a resume file restores."""

    model: VideoClassifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast: dict[str, Any]


def _build_optimisation(job: TrainJob, env: DistEnv, optimiser_steps: int) -> _Optimisation:
    """The model (same tunable init on every rank), the recipe's optimiser, warmup-cosine and AMP."""
    cfg = job.train
    torch.manual_seed(cfg.seed)  # identical tunable initialisation on every rank
    model = build_model(job.model).to(env.device)
    model.checkpointing = cfg.checkpointing
    torch.manual_seed(derive_seed(cfg.seed, "rank", env.rank))  # independent dropout per rank
    # (build_model logs the tunable vs total parameter counts and the tunable tensor names.)
    recipe = cfg.scaled_recipe
    optimizer = build_optimizer(model, recipe, decay_prompts=cfg.decay_prompts)
    if env.is_main:
        log.info(
            "recipe train.recipes.%s: %s; run at lr %g, backbone_lr %g (train.lr_scale.%s)",
            cfg.recipe.name, cfg.recipe.as_params(), recipe.lr, recipe.backbone_lr, recipe.optimizer,
        )  # fmt: skip
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=round(cfg.warmup_epochs * optimiser_steps),
        total_steps=cfg.epochs * optimiser_steps,
    )
    use_amp = cfg.amp and env.device.type == "cuda"
    amp_dtype = autocast_dtype() if use_amp else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    autocast = dict(device_type=env.device.type, dtype=amp_dtype, enabled=use_amp)
    return _Optimisation(model, optimizer, scheduler, scaler, autocast)


def _resume(
    job: TrainJob, env: DistEnv, opt: _Optimisation
) -> tuple[Path | None, int, list[dict[str, float]], list[dict[str, float]]]:
    """This run's resume file and, when it exists, its state restored into `opt` and this rank's RNG.

    Returns (resume file or None, finished epochs, epoch history, step log).
    """
    if job.checkpoint_root is None:
        return None, 0, [], []
    checkpoint = resume_path(job.checkpoint_root, _run_identity(job, env))
    state = load_resume(checkpoint)
    if state is None:
        return checkpoint, 0, [], []
    opt.model.load_tunable_state_dict(state["tunable"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"][env.rank])
    start_epoch = int(state["epoch"])
    if env.is_main:
        log.info("resuming from %s after epoch %d of %d", checkpoint, start_epoch, job.train.epochs)
    return checkpoint, start_epoch, list(state["history"]), list(state["steps"])


def _wrap_ddp(model: VideoClassifier, env: DistEnv) -> nn.Module:
    """DDP over several processes (told about tunable tensors without a gradient); the model itself on one."""
    if env.world_size == 1:
        return model
    unused = unused_tunable_parameters(model, env.device)
    return DistributedDataParallel(
        model,
        device_ids=[env.device.index] if env.device.type == "cuda" else None,
        find_unused_parameters=bool(unused),
        forward_sync_buffers=False,  # mean/std are constants: no per-forward broadcast
    )


def _build_datasets(
    job: TrainJob,
    env: DistEnv,
    model: VideoClassifier,
    stores: tuple[AttributeStore | None, AttributeStore | None],
    steps: int,
    val_samples: int,
) -> tuple[VideoAttributeDataset, VideoAttributeDataset]:
    """Train and val datasets: uint8 clips (normalised on the device), this rank's share of the batch."""
    cfg = job.train
    spec = ClipSpec(
        num_frames=job.model.frames,
        image_size=job.model.image_size,
        augment=Augment(
            crop=cfg.crop,
            crop_scale=cfg.crop_scale,
            flip=cfg.flip,
            rand_augment_ops=cfg.rand_augment_ops,
            rand_augment_magnitude=cfg.rand_augment_magnitude,
            erasing=cfg.random_erasing,
            erase_value=mean_colour(model.mean),
        ),
        sampling=job.model.sampling,
        frame_interval=job.model.frame_interval,
    )
    common = dict(
        batch_size=cfg.global_batch // env.world_size,
        attribute_names=tuple(job.model.attributes),
        seed=cfg.seed,
        decode=cfg.decode,
        rank=env.rank,
        world_size=env.world_size,
    )
    train_store, val_store = stores
    train_data = VideoAttributeDataset(
        job.train_shards, spec, train=True, attributes=train_store, steps=steps, workers=cfg.workers, **common
    )
    val_data = VideoAttributeDataset(
        job.val_shards,
        spec,
        train=False,
        attributes=val_store,
        workers=cfg.workers,
        samples=val_samples,
        **common,
    )
    if env.is_main:
        log.info("loader: train split by %s, val split by %s", train_data.mode, val_data.mode)
        warn_host_decode(cfg.decode, env.device, "train.decode")
    return train_data, val_data


def _set_up(job: TrainJob, env: DistEnv) -> _Run:
    """Check the job; open the data; build model and optimiser; restore a resume file if any."""
    _check_job(job, env)
    train_store, val_store, steps, val_samples = _open_splits(job, env)
    opt = _build_optimisation(job, env, optimiser_steps=steps // job.train.grad_accum)
    checkpoint, start_epoch, history, step_log = _resume(job, env, opt)
    ddp_model = _wrap_ddp(opt.model, env)
    if job.train.compile:  # the state dicts stay the plain model's: checkpoints do not change
        ddp_model = torch.compile(ddp_model)
    train_data, val_data = _build_datasets(job, env, opt.model, (train_store, val_store), steps, val_samples)
    pin = env.device.type == "cuda"
    train_batches: Iterator[dict[str, Any]] = iter(())
    if start_epoch < job.train.epochs:  # one iteration for all the epochs left: workers fork once
        train_data.set_epoch(start_epoch, job.train.epochs)
        train_batches = iter(make_loader(train_data, pin_memory=pin))
    logger = _Logger(job.live_dir, env.is_main)
    for record in step_log:  # a resumed run re-logs what the interrupted one had, so logs match
        logger.step(record)
    for record in history:
        logger.epoch(record)
    return _Run(
        job=job,
        env=env,
        model=opt.model,
        ddp_model=ddp_model,
        optimizer=opt.optimizer,
        scheduler=opt.scheduler,
        scaler=opt.scaler,
        train_batches=train_batches,
        val_loader=make_loader(val_data, pin_memory=pin),
        logger=logger,
        checkpoint=checkpoint,
        steps=steps,
        autocast=opt.autocast,
        start_epoch=start_epoch,
        history=history,
        step_log=step_log,
    )


def _train_epoch(run: _Run, epoch: int) -> list[float]:
    """One pass over the training split; returns the summed [loss, correct, count] of its steps.

    Nothing waits for the device per step: each optimiser step's sums stay on the device and are
    reduced across ranks and read back every `METRICS_EVERY` steps and at the epoch's end, then logged
    one record per step (the values a per-step read-back would give).
    """
    cfg, env, steps = run.job.train, run.env, run.steps
    model, ddp_model, optimizer, scheduler, scaler = (
        run.model, run.ddp_model, run.optimizer, run.scheduler, run.scaler
    )  # fmt: skip
    autocast = run.autocast
    model.train()
    window = torch.zeros(2, dtype=torch.float64, device=env.device)  # this step's loss sum, correct
    count = 0  # this step's samples (known on the host)
    pending: list[tuple[torch.Tensor, int, float]] = []  # per step: device sums, samples, lr
    totals = [0.0, 0.0, 0.0]
    batches = itertools.islice(run.train_batches, steps)
    if env.is_main:
        batches = progress(batches, desc=f"train epoch {epoch + 1}/{cfg.epochs}", total=steps)
    micro = 0
    for micro, batch in enumerate(batches, 1):
        video, attributes, labels = batch_to_device(batch, env.device, model.mean, model.std)
        update = micro % cfg.grad_accum == 0
        no_sync = ddp_model.no_sync() if env.world_size > 1 and not update else contextlib.nullcontext()
        with no_sync:
            with torch.autocast(**autocast):
                logits = ddp_model(video, attributes)  # [b, C]
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            scaler.scale(loss / cfg.grad_accum).backward()
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).sum()
            window += torch.stack([loss.detach().double() * labels.numel(), correct.double()])
        count += labels.numel()
        if not update:
            continue
        lr = scheduler.get_last_lr()[0]
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        pending.append((window, count, lr))
        window, count = torch.zeros_like(window), 0
        if len(pending) == METRICS_EVERY:
            _log_steps(run, epoch, pending, totals)
            pending = []
    if pending:
        _log_steps(run, epoch, pending, totals)
    if micro != steps:
        raise RuntimeError(f"rank {env.rank}: the loader gave {micro} batches, expected {steps} per epoch")
    return totals


def _log_steps(
    run: _Run, epoch: int, pending: list[tuple[torch.Tensor, int, float]], totals: list[float]
) -> None:
    """Reduce the pending steps' sums across ranks in one call, log a record per step, add them to `totals`."""
    env = run.env
    sums = torch.stack([w for w, _, _ in pending])  # [steps, 2] on the device
    counts = sums.new_tensor([float(n) for _, n, _ in pending]).unsqueeze(1)  # [steps, 1]
    rows = _all_reduce(torch.cat([sums, counts], dim=1), env).tolist()  # the one read-back
    for (loss_sum, hits, count), (_, _, lr) in zip(rows, pending, strict=True):
        record = {
            "step": len(run.step_log) + 1,
            "epoch": epoch + 1,
            "loss": loss_sum / count,
            "acc": hits / count,
            "lr": lr,
        }
        run.step_log.append(record)
        run.logger.step(record)
        totals[0] += loss_sum
        totals[1] += hits
        totals[2] += count


def _end_epoch(run: _Run, epoch: int, totals: list[float]) -> None:
    """Log the epoch (validated every `train.val_interval` epochs and after the last) and write the resume file."""
    cfg, env, model = run.job.train, run.env, run.model
    history, step_log, checkpoint = run.history, run.step_log, run.checkpoint
    val_loader, autocast, logger = run.val_loader, run.autocast, run.logger
    optimizer, scheduler, scaler = run.optimizer, run.scheduler, run.scaler
    loss_sum, hits, count = totals
    record = {
        "epoch": epoch + 1,
        "step": len(step_log),
        "train_loss": loss_sum / count,
        "train_acc": hits / count,
        "lr": step_log[-1]["lr"],
    }
    summary = (
        f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.3f}"
    )
    if (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epochs:
        record["val_loss"], record["val_acc"] = evaluate_top1(model, val_loader, env, autocast)
        summary += f" | val loss {record['val_loss']:.4f} acc {record['val_acc']:.3f}"
    history.append(record)
    logger.epoch(record)
    if env.is_main:
        log.info("%s", summary)
    rng = _gather_rng(env)
    if checkpoint is not None and env.is_main:
        save_resume(
            checkpoint,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            epoch=epoch + 1,
            history=history,
            steps=step_log,
            rng=rng,
        )
    _barrier(env)


@torch.no_grad()
def evaluate_top1(
    model: VideoClassifier, loader: DataLoader, env: DistEnv, autocast: Mapping[str, Any]
) -> tuple[float, float]:
    """(mean cross-entropy, top-1) over the whole split, summed across ranks.

    One centre view per video, scored like the final evaluation: each attribute keyframe is a view
    and the loss is the negative log of the view-averaged probability (plain cross-entropy when
    there are no attributes).
    """
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=env.device)  # loss sum, correct
    count = 0  # samples, counted on the host
    batches: Iterable[dict[str, Any]] = loader
    if env.is_main:
        batches = progress(batches, desc="validate")
    for batch in batches:
        video, attributes, labels = batch_to_device(batch, env.device, model.mean, model.std)
        with torch.autocast(**autocast):
            probs = model.view_probabilities(video, attributes)  # [b, C]
        loss = F.nll_loss(probs.float().clamp_min(1e-12).log(), labels, reduction="sum")
        correct = (probs.argmax(dim=1) == labels).sum()
        sums += torch.stack([loss.double(), correct.double()])
        count += labels.numel()
    totals = torch.cat([sums, sums.new_tensor([float(count)])])
    loss_sum, hits, count = _all_reduce(totals, env).tolist()
    if count == 0:
        raise RuntimeError("the validation split has no video with an attribute row")
    return loss_sum / count, hits / count
