"""Precision and device choices, with the GPU's capabilities faked: bf16 only where the hardware has it,
fp16 with a loss scaler below, a scaler that resumes from a bf16 checkpoint, fp32 predictions, every GPU
generator in the checkpoint, no batch of one, and a CPU fallback that is said out loud."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgml.models import create_backbone
from ecgml.train import device as device_mod
from ecgml.train import loop as loop_mod
from ecgml.train.data import RandomCropDataset, SlidingWindowDataset, shard
from ecgml.train.device import Precision, amp_dtype, precision_name, resolve_device
from ecgml.train.loop import OptimConfig, Trainer, load_scaler_state, restore_cuda_rng
from tests.train.test_loop import _auc, cache_and_splits  # noqa: F401  (a module fixture of tiny splits)


@pytest.mark.parametrize(("capability", "dtype"), [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                    ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bf16_only_from_compute_capability_8(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                                             dtype: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true on a T4 or V100 too
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert amp_dtype(torch.device("cuda", 0)) is dtype
    assert amp_dtype(torch.device("cpu")) is None
    assert precision_name(dtype) == ("bf16-mixed" if dtype is torch.bfloat16 else "fp16-mixed")


def test_an_enabled_scaler_resumes_from_a_disabled_one() -> None:
    saved = torch.amp.GradScaler("cpu", enabled=False).state_dict()  # a bf16 or fp32 run's checkpoint
    assert saved == {}
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    with pytest.raises(RuntimeError):
        scaler.load_state_dict(saved)  # what resuming did before the guard
    load_scaler_state(scaler, saved)
    assert scaler.get_scale() == 1024.0
    other = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    load_scaler_state(other, scaler.state_dict())
    assert other.get_scale() == 1024.0


def test_every_gpu_generator_is_checkpointed_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda new: restored.append(list(new)))

    class _Stub(loop_mod.Trainer):
        def __init__(self) -> None:  # only what _state reads
            self.model = torch.nn.Linear(2, 2)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1)
            self.scaler = torch.amp.GradScaler("cpu", enabled=False)

    state = _Stub()._state(0, (0, 0.5), {}, [], 0, {})
    assert [t.tolist() for t in state["cuda_rng"]] == [[1, 2], [3, 4]]
    restore_cuda_rng(state["cuda_rng"])
    assert [t.tolist() for t in restored[0]] == [[1, 2], [3, 4]]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed on a machine with another GPU count
    restore_cuda_rng(state["cuda_rng"])
    assert len(restored) == 1


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_no_shard_ends_in_a_batch_of_one(world: int) -> None:
    for n in range(2, 80):
        for batch in (2, 4, 8):
            parts = [shard(np.arange(n), rank, world, batch) for rank in range(world)]
            assert len({len(p) for p in parts}) == 1  # every rank takes as many steps
            assert all(len(p) % batch != 1 for p in parts if len(p) > 1)
            assert len(parts[0]) >= -(-n // world) - 1  # at most one record left out per epoch


def test_auto_says_once_when_it_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_SAID", set())  # as in a fresh process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device("auto") == torch.device("cpu")  # a study's second run in the same process
    assert caught == []  # said on stderr only, not a second time as a warning
    assert capsys.readouterr().err == "warning: device 'auto': torch sees no CUDA or MPS GPU; training on the CPU\n"


def test_cuda_n_becomes_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    current = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.__setitem__(0, torch.device(d).index))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    assert device_mod.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert current == [1]  # no context opened on GPU 0
    with pytest.raises(ValueError, match="sees 2 CUDA GPU"):
        device_mod.resolve_device("cuda:2")


def test_predictions_are_fp32_even_when_training_in_mixed_precision(
        cache_and_splits: tuple, tmp_path: Path) -> None:  # noqa: F811
    cache, train, val = cache_and_splits
    mean, std = cache.stats
    probs = []
    for amp in (True, False):
        torch.manual_seed(0)
        model = create_backbone("xresnet1d18", in_channels=12, num_classes=train.labels.shape[1], width=0.25,
                                layers=[1, 1])
        trainer = Trainer(model, RandomCropDataset(cache.signals, train, mean, std, 250, seed=1),
                          SlidingWindowDataset(cache.signals, val, mean, std, 250, 125), val.labels,
                          OptimConfig(epochs=1, batch_size=8), score_fn=_auc, device=torch.device("cpu"),
                          checkpoint_path=tmp_path / f"{amp}.pt", amp=amp, progress=False)
        assert trainer.precision == ("bf16-mixed" if amp else "fp32")
        probs.append(trainer.predict(trainer.val_data, "max"))
    np.testing.assert_array_equal(probs[0], probs[1])  # bf16 autocast would differ in the 3rd digit


def test_the_device_does_not_enter_the_config_digest(tmp_path: Path) -> None:
    from ecgml.config import DataConfig, PrepareConfig
    from ecgml.train.pipeline import TrainConfig

    data = PrepareConfig(DataConfig("ptbxl", tmp_path, task="superdiagnostic"), cache_dir=tmp_path)
    digests = {TrainConfig(kind="pretrain", data=data, device=d).digest() for d in ("auto", "cuda", "cuda:1", "cpu")}
    assert len(digests) == 1  # an auto run on a GPU and a cuda run resume each other
    assert TrainConfig(kind="pretrain", data=data, seed=1).digest() not in digests


def test_one_precision_rule_for_trainer_params_and_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert Precision.choose(torch.device("cuda", 0)) == Precision("cuda", torch.float16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert Precision.choose(torch.device("cuda", 0)).name == "bf16-mixed"
    cpu = Precision.choose(torch.device("cpu"))
    assert cpu == Precision("cpu", None) and cpu.name == "fp32" and not cpu.enabled
    assert not cpu.scaler().is_enabled() and not cpu.autocast()._enabled
    forced = Precision.choose(torch.device("cpu"), amp=True)
    assert forced.dtype is torch.bfloat16 and not forced.scaler().is_enabled()  # bf16 needs no loss scaler
    assert Precision("cpu", torch.float16).scaler().is_enabled()  # fp16 does
    assert Precision.choose(torch.device("cuda", 0), amp=False).name == "fp32"
