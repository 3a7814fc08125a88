"""The training loop: multi-label BCE, AdamW with a one-cycle schedule, validation on sliding windows,
early stopping on validation macro AUC, an atomic checkpoint every epoch, and exact resumption.

The loop knows nothing of MLflow: it reports each finished epoch to an ``on_epoch`` callback (rank 0
only), which the tracking layer turns into logged metrics.
"""

from __future__ import annotations

import copy
import gc
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ecgml.config import STRATEGIES
from ecgml.data.windows import Aggregate, aggregate_windows
from ecgml.runtime.console import epoch_line, progress_options, say
from ecgml.train.batches import BatchSource
from ecgml.train.checkpoint import load_checkpoint_everywhere, save_checkpoint
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, shard
from ecgml.train.device import Precision
from ecgml.train.distributed import (
    DistContext,
    all_gather,
    all_reduce_sum,
    broadcast_buffers,
    broadcast_object,
    solo,
)
from ecgml.train.layer_lr import LAYER_LR_OPTION, check_fractions, group_lr_scales, split_overrides
from ecgml.train.optim import adamw

ScoreFn = Callable[[np.ndarray, np.ndarray], float]


#: Which epoch a run keeps (:attr:`OptimConfig.keep`).
KEEP_CHOICES: tuple[str, ...] = ("best", "last")


@dataclass(frozen=True)
class OptimConfig:
    """How to optimise: the knobs Optuna and the sweeps turn."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-2
    pct_start: float = 0.3
    #: Discriminative learning rates: group i of n gets ``lr * lr_decay ** (n - 1 - i)`` (1 = same lr).
    lr_decay: float = 1.0
    #: Stop after this many epochs without a better validation score (0 = never stop early).
    patience: int = 5
    aggregate: Aggregate = "max"
    #: What trains: ``full`` (everything), ``linear`` (the head only: a linear probe of a frozen backbone)
    #: or ``gradual`` (the head first, then one more group from the top in each of equal epoch stages).
    strategy: str = "full"
    #: Clip the gradient norm (off by default, as in the PTB-XL benchmark; it costs ~5% of a CPU step).
    grad_clip: float | None = None
    #: Layer-wise rates: the backbone's groups at these fractions of the head's rate (``ecgml.train.layer_lr``);
    #: empty: every group at ``lr`` (or ``lr_decay``'s rule).
    layer_lr_fractions: tuple[float, ...] = ()
    #: Which epoch's weights are kept: ``best`` (by validation macro AUC, with early stopping) or ``last`` (every
    #: epoch trained: cross-validation of a small target, whose validation split is its test fold, shown only).
    keep: str = "best"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch size ({self.batch_size}) must be >= 1")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 < self.pct_start < 1 and 0 < self.lr_decay <= 1):
            raise ValueError("need lr > 0, weight_decay >= 0, 0 < pct_start < 1 and 0 < lr_decay <= 1")
        if self.aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean', not {self.aggregate!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        object.__setattr__(self, "layer_lr_fractions", tuple(float(f) for f in self.layer_lr_fractions))
        if self.layer_lr_fractions:
            check_fractions(self.layer_lr_fractions)
            if self.lr_decay != 1:
                raise ValueError(f"{LAYER_LR_OPTION} and lr_decay both set the groups' rates: give one of them")
        if self.keep not in KEEP_CHOICES:
            raise ValueError(f"keep must be one of {', '.join(KEEP_CHOICES)}, not {self.keep!r}")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_macro_auc: float
    lr: float
    seconds: float
    samples_per_s: float


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[EpochRecord]
    best_state: dict[str, torch.Tensor]
    stopped_early: bool = False
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _param_groups(model: nn.Module, lr: float, lr_decay: float, weight_decay: float,
                  include_frozen: bool = False, layer_lr_fractions: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Optimizer groups, input to output, with discriminative learning rates: ``layer_lr_fractions`` of the
    head's rate per backbone group when given, else ``lr_decay``'s rule; a module's own ``optim_overrides``
    (``ecgml.train.layer_lr``) split its parameters into a group of their own.

    ``include_frozen`` keeps frozen parameters in (gradual unfreezing thaws them later; AdamW skips a
    parameter while it has no gradient).
    """
    groups = model.parameter_groups() if hasattr(model, "parameter_groups") else [("all", list(model.parameters()))]
    trainable = [(name, [p for p in params if include_frozen or p.requires_grad]) for name, params in groups]
    trainable = [(name, params) for name, params in trainable if params]
    if not trainable:
        raise ValueError("every parameter is frozen: nothing to train")
    n = len(trainable)
    scales = (group_lr_scales([name for name, _ in groups], layer_lr_fractions) if layer_lr_fractions else
              {name: lr_decay ** (n - 1 - i) for i, (name, _) in enumerate(trainable)})
    return [{**group, "name": name} for name, params in trainable
            for group in split_overrides(params, model, lr * scales[name], weight_decay)]


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Resume the loss scaler, unless the checkpoint's scaler was off (bf16 or fp32: an empty state) and
    this one is on (the run resumes in fp16 on an older GPU): then it starts afresh, as in a new run.
    ``GradScaler.load_state_dict`` refuses an empty state for an enabled scaler."""
    if state or not scaler.is_enabled():
        scaler.load_state_dict(state)


def restore_cuda_rng(states: Sequence[torch.Tensor]) -> None:
    """Put back every GPU's generator when the checkpoint has them and this machine as many GPUs (a run
    resumed on another kind of machine continues with fresh GPU generators)."""
    if states and torch.cuda.is_available() and len(states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(states))


class Trainer:
    """Fits one model; ``fit`` can resume from the checkpoint of a killed run."""

    def __init__(
        self,
        model: nn.Module,
        train_data: RandomCropDataset,
        val_data: SlidingWindowDataset,
        val_labels: np.ndarray,
        optim: OptimConfig,
        *,
        score_fn: ScoreFn,
        device: torch.device,
        checkpoint_path: Path,
        seed: int = 0,
        num_workers: int = 0,
        amp: bool | None = None,
        dist_ctx: DistContext | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        progress: bool = True,
        device_data: str = "auto",
        compile_model: bool = False,
    ) -> None:
        self.model = model.to(device)
        self.train_data = train_data
        self.val_data = val_data
        self.val_labels = val_labels
        self.optim = optim
        self.score_fn = score_fn
        self.device = device
        self.checkpoint_path = Path(checkpoint_path)
        self.seed = seed
        self.num_workers = num_workers
        self.ctx = dist_ctx or DistContext()
        self.on_epoch = on_epoch
        self.progress = progress and self.ctx.is_main
        if self.ctx.enabled and self.ctx.device.type == "cuda" and device != self.ctx.device:
            raise ValueError(f"the model is on {device} but this rank's collectives run on {self.ctx.device}")
        # ``amp`` forces mixed precision on or off; by default CUDA trains in bf16 or fp16 (see amp_dtype)
        self.precision_policy = Precision.choose(device, amp)
        self.amp = self.precision_policy.enabled
        self.amp_dtype: torch.dtype | None = self.precision_policy.dtype
        self.loss_fn = nn.BCEWithLogitsLoss()
        if optim.strategy != "full" and not hasattr(self.model, "unfreeze_last"):
            raise ValueError(f"strategy {optim.strategy!r} needs a backbone with parameter groups")
        if optim.strategy == "linear":
            self.model.unfreeze_last(1)
        self.train_model: nn.Module = self.model
        self._wrapped_for: tuple[bool, ...] | None = None
        if optim.strategy != "gradual":  # gradual wraps at each epoch's stage (_train_epoch)
            self._wrap()  # after freezing: DDP synchronises what requires a gradient when it is built
        self.optimizer = adamw(_param_groups(self.model, optim.lr, optim.lr_decay, optim.weight_decay,
                                             include_frozen=optim.strategy == "gradual",
                                             layer_lr_fractions=optim.layer_lr_fractions))
        self.steps_per_epoch = math.ceil(len(self._train_indices()) / optim.batch_size)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=[g["lr"] for g in self.optimizer.param_groups],
            total_steps=optim.epochs * self.steps_per_epoch, pct_start=optim.pct_start)
        self.scaler = self.precision_policy.scaler()
        self._setup_data_path(device_data, compile_model)

    def _wrap(self) -> None:
        """Wrap the model in DDP for the parameters that train now; again whenever that set changes.

        DDP registers its gradient hooks and buckets for the parameters that require a gradient when it
        is built. Wrapped before a freeze, it waits for gradients that never come ("Expected to have
        finished reduction in the prior iteration"); wrapped before a thaw, the thawed parameters are
        never averaged and the ranks drift apart silently. ``find_unused_parameters`` would cover only
        the first case, at a graph traversal every step, and ``static_graph`` neither; gradual unfreezing
        changes the set a few times per run, so a new wrapper per stage costs one bucket rebuild each.
        """
        if not self.ctx.enabled:
            return
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable == self._wrapped_for:
            return
        self.train_model = self.model  # drop the old wrapper (its reducer removes its hooks) first
        gc.collect()
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._wrapped_for = trainable

    # -- data ---------------------------------------------------------------------------------------
    def _train_indices(self) -> list[int]:
        """This rank's share of the training records (all of them when run alone)."""
        return self._shard(list(range(len(self.train_data))))

    def _shard(self, order: list[int]) -> list[int]:
        """Disjoint, equal-sized shards (see :func:`ecgml.train.data.shard`)."""
        return shard(order, self.ctx.rank, self.ctx.world_size, self.optim.batch_size).tolist()

    def _setup_data_path(self, device_data: str, compile_model: bool) -> None:
        """Decide once per run where batches are cut (:class:`~ecgml.train.batches.BatchSource`) and
        whether to compile."""
        self.batches = BatchSource(self.train_data, self.val_data, batch_size=self.optim.batch_size, seed=self.seed,
                                   device=self.device, num_workers=self.num_workers, rank=self.ctx.rank,
                                   world_size=self.ctx.world_size, device_data=device_data)
        self.device_data = self.batches.on_device
        self.compile_model = compile_model
        self._compiled: tuple[nn.Module, nn.Module] | None = None

    def _train_loader(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches (the same crops on either path)."""
        self.train_data.set_epoch(epoch)
        return self.batches.train(epoch)

    def _training_module(self) -> nn.Module:
        """The module the steps run: ``torch.compile``'d (once per wrapped module) when asked."""
        if not self.compile_model:
            return self.train_model
        if self._compiled is None or self._compiled[0] is not self.train_model:
            self._compiled = (self.train_model, torch.compile(self.train_model))
        return self._compiled[1]

    # -- steps --------------------------------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        return self.precision_policy.autocast()

    @property
    def precision(self) -> str:
        """fp32, bf16-mixed or fp16-mixed (logged with each run)."""
        return self.precision_policy.name

    def trainable_groups(self, epoch: int) -> int | None:
        """How many groups from the top train in ``epoch`` under gradual unfreezing (None otherwise)."""
        if self.optim.strategy != "gradual":
            return None
        n_groups = len(self.model.group_names)
        return min(n_groups, 1 + epoch * n_groups // self.optim.epochs)

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        stage = self.trainable_groups(epoch)
        if stage is not None:
            self.model.unfreeze_last(stage)
            self._wrap()
        self.train_model.train()
        total, count = torch.zeros((), device=self.device), 0  # summed on the device: no sync per step
        loader = self._train_loader(epoch)
        module = self._training_module()
        for x, y in tqdm(loader, desc=f"epoch {epoch + 1}/{self.optim.epochs}", leave=False,
                         **progress_options(enabled=self.progress)):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self._autocast():
                loss = self.loss_fn(module(x).float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += loss.detach() * len(x)
            count += len(x)
        summed, count = all_reduce_sum([total.item(), float(count)], self.ctx)  # the epoch's one sync
        return summed / max(count, 1), int(count)

    @torch.no_grad()
    def predict(self, windows: SlidingWindowDataset, aggregate: Aggregate, batch_size: int = 256) -> np.ndarray:
        """Per-record probabilities: sigmoid of every window, aggregated (max or mean) per record.

        In fp32, as served: under autocast the logits are quantised (steps of ~0.03 at |logit| 4-8), which
        ties AUCs, moves early stopping and skews the temperatures fitted on these predictions."""
        self.model.eval()
        broadcast_buffers(self.model, self.ctx)  # every shard scored by rank 0's model, the one it saves
        mine = np.arange(self.ctx.rank, len(windows), self.ctx.world_size)
        scores = []
        for x in self.batches.windows(windows, mine, batch_size):
            scores.append(torch.sigmoid(self.model(x).float()))
        local = (torch.cat(scores).cpu().numpy() if scores  # the evaluation's one sync
                 else np.zeros((0, self._num_classes()), np.float32))
        shards = all_gather((mine, local), self.ctx)
        window_scores = np.zeros((len(windows), local.shape[1]), dtype=np.float32)
        for indices, values in shards:
            window_scores[indices] = values
        return aggregate_windows(window_scores, windows.owner, len(windows.split), aggregate)

    def _num_classes(self) -> int:
        return int(self.train_data.labels.shape[1])

    def _validate(self) -> tuple[float, float]:
        probs = self.predict(self.val_data, self.optim.aggregate)
        clipped = np.clip(probs, 1e-7, 1 - 1e-7)
        y = self.val_labels
        loss = float(-(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean())
        return loss, float(self.score_fn(y, probs))

    # -- checkpoints --------------------------------------------------------------------------------
    def _state(self, epoch: int, best: tuple[int, float], best_state: dict[str, torch.Tensor],
               history: Sequence[EpochRecord], bad_epochs: int, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_epoch": best[0],
            "best_score": best[1],
            "best_model": best_state,
            "bad_epochs": bad_epochs,
            "history": [asdict(h) for h in history],
            "torch_rng": torch.get_rng_state(),
            # every GPU's generator too (dropout on CUDA draws from it): exact resumption on GPUs as well
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "extra": extra,
        }

    def _end_epoch(self, record: EpochRecord, progress: tuple[tuple[int, float], dict[str, torch.Tensor],
                                                             Sequence[EpochRecord], int, dict[str, Any]]) -> None:
        """Rank 0 after each epoch: the checkpoint, the ``on_epoch`` report and the log line."""
        best = progress[0]
        save_checkpoint(self.checkpoint_path, self._state(record.epoch, *progress))
        if self.on_epoch:
            self.on_epoch(record)
        if self.progress:  # the run's log: one line per epoch
            say(epoch_line(record.epoch, self.optim.epochs, record.train_loss, record.val_macro_auc, best[1],
                           best[0], record.seconds))

    def fit(self, *, resume: bool = False, extra: dict[str, Any] | None = None) -> FitResult:
        """Train to the end or to early stopping; with ``resume`` continue from the last checkpoint."""
        extra = dict(extra or {})
        start, best, bad_epochs = 0, (-1, -math.inf), 0
        history: list[EpochRecord] = []
        best_state = copy.deepcopy(self.model.state_dict())
        resumed_from = None
        if resume:
            state = load_checkpoint_everywhere(self.checkpoint_path, self.ctx)  # only rank 0 has the file
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            load_scaler_state(self.scaler, state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            restore_cuda_rng(state.get("cuda_rng", []))
            start = int(state["epoch"]) + 1
            best = (int(state["best_epoch"]), float(state["best_score"]))
            best_state = state["best_model"]
            bad_epochs = int(state["bad_epochs"])
            history = [EpochRecord(**h) for h in state["history"]]
            extra = {**state.get("extra", {}), **extra}
            resumed_from = start - 1
        stopped_early = bool(self.optim.patience and bad_epochs >= self.optim.patience)
        for epoch in range(start, self.optim.epochs):
            if stopped_early:
                break
            began = time.perf_counter()
            train_loss, seen = self._train_epoch(epoch)
            val_loss, score = self._validate()
            elapsed = time.perf_counter() - began
            record = EpochRecord(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_macro_auc=score,
                                 lr=float(self.scheduler.get_last_lr()[-1]), seconds=elapsed,
                                 samples_per_s=seen / elapsed)
            history.append(record)
            keep_last = self.optim.keep == "last"
            if keep_last or score > best[1]:
                best, bad_epochs = (epoch, score), 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                bad_epochs += 1
            stopped_early = bool(broadcast_object(not keep_last and self.optim.patience
                                                  and bad_epochs >= self.optim.patience, self.ctx))
            # rank 0 alone writes the checkpoint and logs (a tracking outage can slow it): the other ranks
            # wait for it on the long-timeout group, and stop if it failed
            solo(partial(self._end_epoch, record, (best, best_state, history, bad_epochs, extra)), self.ctx,
                 here=self.ctx.is_main)
        return FitResult(best_epoch=best[0], best_score=best[1], history=history, best_state=best_state,
                         stopped_early=stopped_early, resumed_from=resumed_from, extra=extra)

