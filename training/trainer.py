"""`vlmcap train`: projector (stage 1) and projector + LoRA (stage 2) training, resumable exactly.

One optimizer step = `grad_accum` micro-batches of `batch_size` videos per process. Under torchrun
each process takes its own shard of every epoch and DDP averages the gradients (gloo on CPU,
NCCL on CUDA). Everything a resumed run needs is in the checkpoints (see checkpoint.py); a run
stopped at step k and resumed logs exactly the losses an uninterrupted run logs.

Over 400 lines on purpose: the loop, its resume state and its DDP set-up are read together; the
data, checkpoints, feature cache and evaluation already live in their own files beside it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from vlmcap.config.loading import dump_config
from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ConfigError
from vlmcap.labelled_manifest import load_manifest
from vlmcap.model.llm import compute_dtype
from vlmcap.model.vlm import VideoLanguageModel
from vlmcap.presets import resolve_model_source
from vlmcap.storage.files import append_jsonl, atomic_write_text, replace_dir
from vlmcap.storage.home import vlmcap_home
from vlmcap.storage.run_dir import (
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    STATE_FILE,
    latest_checkpoint,
    resolve_weights_dir,
)
from vlmcap.training.checkpoint import (
    load_weights,
    optimizer_from_files,
    optimizer_to_files,
    rng_from_files,
    rng_to_files,
    save_weights,
    write_checkpoint,
)
from vlmcap.training.data import DataPosition, VideoBatches
from vlmcap.training.evaluate import evaluate
from vlmcap.training.features import FeatureCache, encoder_fingerprint
from vlmcap.training.memory_plan import (
    MemoryPlan,
    MemoryPlanner,
    decoder_layers,
    memory_budget_bytes,
    set_checkpointed_layers,
    training_autocast,
)
from vlmcap.training.plots import write_training_plots
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.image_spec import ImageSpec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path | None
    step: int
    total_steps: int
    seconds: float
    eval: dict


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # collectives use the current device: one GPU per process
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(dist.get_rank(), world, local_rank)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: VlmcapConfig, run_dir: Path, resume: bool = False) -> None:
        tc = config.train
        if not tc.data:
            raise ConfigError("train.data: no training manifest given (use --data or set train.data)")
        self.config, self.run_dir, self.dist = config, Path(run_dir), _init_distributed()
        # Fail on bad input before any model is built.
        self.train_samples = load_manifest(tc.data)
        self.val_sets = {Path(v).stem: load_manifest(v) for v in tc.val}
        if len(self.val_sets) != len(tc.val):
            raise ConfigError(f"train.val: manifests need distinct file names, got {tc.val}")
        # Each process drops its incomplete last batch, so an epoch is this many micro-batches.
        per_epoch = (len(self.train_samples) // self.dist.world) // tc.batch_size
        if per_epoch == 0:
            raise ConfigError(
                f"train.batch_size={tc.batch_size}: larger than the {len(self.train_samples) // self.dist.world} "
                f"samples each of {self.dist.world} process(es) reads from {tc.data}"
            )
        if tc.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("train.tensorboard: needs the tensorboard package (pip install tensorboard)")
        self.resume_requested = resume
        self.resume_from = latest_checkpoint(self.run_dir) if resume else None
        if not resume and self.run_dir.exists() and latest_checkpoint(self.run_dir):
            raise ConfigError(f"{self.run_dir}: already has checkpoints; pass --resume or choose another --out")

        self.device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        # Planned before any weight loads: a budget nothing fits fails here, in seconds.
        self.memory_plan = self._plan_memory()
        _seed_everything(config.seed)
        self.model = VideoLanguageModel.from_config(config, self.device, lora=tc.stage == "lora")
        if tc.init_from:
            load_weights(
                self.model, resolve_weights_dir(tc.init_from, "train.init_from"), with_adapter=tc.stage == "lora"
            )
        if self.memory_plan is not None:
            self.checkpointed_layers = self.memory_plan.checkpointed_layers
        else:
            self.checkpointed_layers = len(decoder_layers(self.model.llm)) if tc.gradient_checkpointing else 0
        if self.checkpointed_layers:
            set_checkpointed_layers(self.model.llm, self.checkpointed_layers)
        vision_source = resolve_model_source(config.model.vision.model, seed=config.seed)
        self.image_spec = ImageSpec.from_pretrained(vision_source.path, config.model.vision.revision)
        self.decode = DecodeOptions(num_frames=config.video.num_frames)

        cache = None
        if tc.feature_cache:
            fingerprint = encoder_fingerprint(
                vision_source.path,
                config.model.vision.revision,
                {
                    "layer": config.model.vision.feature_layer,
                    "decode": asdict(self.decode),
                    "image": self.image_spec.to_dict(),
                    "random_init": vision_source.random_init,
                },
            )
            cache = FeatureCache(vlmcap_home() / "feature-cache", fingerprint)
        self.data = VideoBatches(
            self.train_samples,
            tc.batch_size,
            config.seed,
            self.image_spec,
            self.decode,
            tc.decode_workers,
            tc.decode_timeout_s,
            tc.max_decode_failures,
            cache,
            self.dist.rank,
            self.dist.world,
        )

        self.total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * per_epoch / tc.grad_accum))
        groups = [
            {
                "params": [p for p in self.model.projector.parameters() if p.requires_grad],
                "lr": tc.lr_projector,
                "name": "projector",
            },
            {
                "params": [p for n, p in self.model.llm.named_parameters() if p.requires_grad],
                "lr": tc.lr_lora,
                "name": "lora",
            },
        ]
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=tc.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, math.ceil(tc.warmup_ratio * self.total_steps), self.total_steps
        )
        self.step = 0
        self.step_seconds = 0.0  # optimizer steps only: no model loading, cache filling or evaluation
        self.position = DataPosition()
        self.dtype = compute_dtype(config.model.llm.dtype, self.device)

    def _plan_memory(self) -> MemoryPlan | None:
        """The memory plan when the config asks for one (`auto` checkpointing or a budget), logged."""
        tc = self.config.train
        if tc.gradient_checkpointing != "auto" and tc.memory_budget_gb is None:
            return None
        budget = memory_budget_bytes(tc.memory_budget_gb, self.device)
        planner = MemoryPlanner(self.config, self.device, [s.caption for s in self.train_samples])
        plan = planner.choose(tc.gradient_checkpointing, budget)
        log.info(
            "memory plan: %.1f GB at batch %d x %d tokens, gradient checkpointing %s (budget %.1f GB)",
            plan.total_bytes / 2**30,
            plan.batch_size,
            plan.sequence_tokens,
            plan.checkpointing,
            budget / 2**30,
        )
        return plan

    # -- state ------------------------------------------------------------------------------------

    def _write_state(self, out: Path, positions: list[dict]) -> None:
        save_weights(self.model, out)
        optimizer_to_files(self.optimizer, out)
        (out / "scheduler.json").write_text(json.dumps(self.scheduler.state_dict()))
        rng_to_files(out)
        state = {"step": self.step, "total_steps": self.total_steps, "positions": positions}
        (out / STATE_FILE).write_text(json.dumps(state, indent=2))

    def _gather_positions(self) -> list[dict]:
        mine = asdict(self.position)
        if self.dist.world == 1:
            return [mine]
        import torch.distributed as dist

        everyone: list = [None] * self.dist.world
        dist.all_gather_object(everyone, mine)
        return everyone

    def save_checkpoint(self) -> None:
        positions = self._gather_positions()
        if self.dist.main:
            path = write_checkpoint(
                self.run_dir, self.step, lambda out: self._write_state(out, positions), self.config.train.keep_last
            )
            log.info("saved %s", path)
        self._barrier()

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / STATE_FILE).read_text())
        if len(state["positions"]) != self.dist.world:
            raise ConfigError(
                f"{path}: saved by {len(state['positions'])} processes, resumed with {self.dist.world}; "
                "resume with the same number of processes"
            )
        load_weights(self.model, path)
        optimizer_from_files(self.optimizer, path)
        self.scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
        rng_from_files(path)
        self.step = state["step"]
        self.position = DataPosition(**state["positions"][self.dist.rank])
        self._trim_metrics(self.step)
        log.info("resumed from %s at step %d", path, self.step)

    def _trim_metrics(self, step: int) -> None:
        """Keep metric lines up to `step`: the resumed (or restarted) run writes the rest again."""
        metrics = self.run_dir / METRICS_FILE
        if not self.dist.main or not metrics.exists():
            return
        kept = []
        for line in metrics.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line torn by kill -9
        atomic_write_text(metrics, "".join(line + "\n" for line in kept))

    def _barrier(self) -> None:
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop_after_steps: int | None = None) -> TrainResult:
        start = time.perf_counter()
        tc = self.config.train
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / CONFIG_FILE, dump_config(self.config))
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        else:
            if self.resume_requested:
                log.warning("%s: no checkpoint to resume from; starting at step 0", self.run_dir)
            self._trim_metrics(0)
        if self.data.cache is not None:
            self.data.fill_cache(lambda px: self.model.vision(px.to(self.device)), self.position)
            self._barrier()
        model = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(self.model, broadcast_buffers=False)
        writer = self._tensorboard()
        bar = self._progress()
        stop_at = self.step + stop_after_steps if stop_after_steps else None
        batches = self.data.batches(self.position)
        last_eval: dict = {}
        self.model.train()
        try:
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                loss_sum = 0.0
                for micro in range(tc.grad_accum):
                    batch, self.position = next(batches)
                    prompts = [self.model.prompts.encode(s.prompt, s.caption) for s in batch.samples]
                    pixels = batch.pixel_values.to(self.device) if batch.pixel_values is not None else None
                    features = batch.features.to(self.device) if batch.features is not None else None
                    sync = micro == tc.grad_accum - 1 or self.dist.world == 1
                    with contextlib.nullcontext() if sync else model.no_sync(), self._autocast():
                        loss = model(pixels, prompts, features=features) / tc.grad_accum
                    loss.backward()
                    loss_sum += loss.item()
                torch.nn.utils.clip_grad_norm_(self.params, tc.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                seconds = time.perf_counter() - t0
                self.step_seconds += seconds
                record = {
                    "step": self.step,
                    "epoch": self.position.epoch,
                    "loss": round(loss_sum, 6),
                    "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)},
                    "samples_per_s": round(tc.batch_size * tc.grad_accum * self.dist.world / seconds, 2),
                    "skipped_videos": len(self.position.failed),
                }
                self._log_step(record, bar, writer)
                done = self.step == self.total_steps
                if self.step % tc.save_every == 0 or done or (stop_at and self.step >= stop_at):
                    self.save_checkpoint()
                if self.val_sets and (self.step % tc.eval_every == 0 or done):
                    last_eval = self.evaluate(writer)
                if stop_at and self.step >= stop_at and not done:
                    log.info("stopping after step %d as asked; continue with --resume", self.step)
                    return TrainResult(
                        self.run_dir, None, self.step, self.total_steps, time.perf_counter() - start, last_eval
                    )
        finally:
            batches.close()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        final = self._write_final() if self.dist.main else None
        if self.dist.main:
            write_training_plots(self.run_dir)
        result = TrainResult(self.run_dir, final, self.step, self.total_steps, time.perf_counter() - start, last_eval)
        if self.dist.main:
            summary = {
                "steps": self.step,
                "seconds": round(result.seconds, 1),
                "train_step_seconds": round(self.step_seconds, 1),
                "trainable_parameters": sum(p.numel() for p in self.params),
                "tokens_per_video": self.model.tokens_per_video,
                "checkpointed_layers": self.checkpointed_layers,
                "memory_plan": self.memory_plan.to_dict() if self.memory_plan else None,
                "projector": self.config.model.projector.kind,
                "stage": tc.stage,
                "eval": last_eval,
            }
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
        self._barrier()
        return result

    def _autocast(self):
        if training_autocast(self.device, self.dtype):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def evaluate(self, writer=None) -> dict:
        results = {}
        if self.dist.main:
            tc = self.config.train
            for name, samples in self.val_sets.items():
                metrics = evaluate(
                    self.model,
                    samples,
                    self.image_spec,
                    self.decode,
                    out=self.run_dir / "eval" / f"step-{self.step}-{name}.jsonl",
                    batch_size=tc.eval_batch_size,
                    max_new_tokens=tc.eval_max_new_tokens,
                    num_workers=tc.decode_workers,
                    decode_timeout_s=tc.decode_timeout_s,
                )
                results[name] = metrics
                log.info("eval %s step %d: %s", name, self.step, json.dumps(metrics, ensure_ascii=False))
                if writer is not None:
                    writer.add_scalar(f"eval/{name}/chrf++", metrics["chrf++"], self.step)
                    writer.add_scalar(f"eval/{name}/cider_d", metrics["cider_d"], self.step)
            self._append_metrics({"step": self.step, "eval": results})
            write_training_plots(self.run_dir)
        self._barrier()
        return results

    def _write_final(self) -> Path:
        final = self.run_dir / FINAL_DIR
        tmp = self.run_dir / f".{FINAL_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_weights(self.model, tmp)
        (tmp / CONFIG_FILE).write_text(dump_config(self.config), encoding="utf-8")
        (tmp / STATE_FILE).write_text(json.dumps({"step": self.step, "total_steps": self.total_steps}))
        replace_dir(tmp, final)
        return final

    # -- reporting --------------------------------------------------------------------------------

    def _progress(self):
        if not self.dist.main or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step")

    def _tensorboard(self):
        if not (self.dist.main and self.config.train.tensorboard):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(self.run_dir / "tensorboard")

    def _append_metrics(self, record: dict) -> None:
        append_jsonl(self.run_dir / METRICS_FILE, [record])

    def _log_step(self, record: dict, bar, writer) -> None:
        if not self.dist.main:
            return
        self._append_metrics(record)
        if writer is not None:
            writer.add_scalar("train/loss", record["loss"], record["step"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                loss=f"{record['loss']:.4f}", lr=f"{next(iter(record['lr'].values())):.2e}", sps=record["samples_per_s"]
            )
        elif record["step"] % self.config.train.log_every == 0 or record["step"] == 1:
            log.info(
                "step %d/%d loss %.4f lr %s samples/s %.1f",
                record["step"],
                self.total_steps,
                record["loss"],
                record["lr"],
                record["samples_per_s"],
            )


def run_training(
    config: VlmcapConfig, run_dir: Path, resume: bool = False, stop_after_steps: int | None = None
) -> TrainResult:
    return Trainer(config, run_dir, resume).run(stop_after_steps)
