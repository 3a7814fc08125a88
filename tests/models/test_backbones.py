"""Every registered backbone, at its tiny size: shapes, learning, reference outputs, the transfer contract
(groups, freezing, new heads) and the weights round trip; plus the registry's own behaviour."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ecgml.models import (
    Backbone,
    XResNet1d,
    count_parameters,
    create_backbone,
    family_of,
    family_rank,
    get_backbone_entry,
    list_backbones,
    list_families,
    rebuild_backbone,
    register_backbone,
)
from ecgml.models import registry as registry_module
from tests.models.make_reference_outputs import (
    ATOL,
    FIXTURE,
    RTOL,
    outputs_of,
    perturb_batchnorm,
    reference_input,
    reference_outputs,
    tiny_kwargs_json,
    tiny_model,
)
from tests.models.make_reference_outputs import (
    DTYPE as REFERENCE_DTYPE,
)

NAMES = list_backbones()
BN = nn.modules.batchnorm._BatchNorm


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run thousands of microsecond ops: one thread is faster, and an OpenMP team of two on a
    shared two-core machine can wait a scheduler slice at every op barrier (tens of seconds per test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixture_arrays() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def _tiny(name: str, seed: int = 0, **overrides: Any) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone(name, **{**get_backbone_entry(name).tiny, **overrides})


def _batch(n: int = 8, leads: int = 12, length: int = 64, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, leads, length, generator=gen)
    y = (torch.rand(n, classes, generator=gen) < 0.3).float()
    return x, y


# registry ------------------------------------------------------------------------------------------------------
def test_registry_holds_the_study_families() -> None:
    assert set(list_families()) == {"xresnet1d", "resnet1d", "inception1d", "s4d"}
    assert {"xresnet1d18", "xresnet1d34", "xresnet1d50", "xresnet1d101"} <= set(list_backbones("xresnet1d"))
    assert "resnet1d_wang" in list_backbones("resnet1d")
    assert "inception1d" in list_backbones("inception1d")
    assert sorted(NAMES) == NAMES
    with pytest.raises(ValueError, match="families: inception1d, resnet1d, s4d, xresnet1d"):
        list_backbones("transformer")


def test_unknown_name_lists_registered_names() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'xresnet1d100'") as err:
        create_backbone("xresnet1d100")
    for name in NAMES:
        assert name in str(err.value)
    assert "did you mean" in str(err.value)


def test_every_backbone_declares_tiny_kwargs() -> None:
    for name in NAMES:
        assert get_backbone_entry(name).tiny, f"{name} registers no tiny kwargs for the tests"
        assert get_backbone_entry(name).doc, f"{name} has no docstring"


def test_a_new_model_is_one_decorated_function() -> None:
    class Dummy(Backbone):
        def __init__(self, *, in_channels: int = 12, num_classes: int = 2, width: float = 1.0) -> None:
            super().__init__(in_channels, num_classes)
            self.stem = nn.Conv1d(in_channels, 4, 3, padding=1)
            self.stages = nn.ModuleList([nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.ReLU())])
            self._finish(4, lin_ftrs=(), ps=0.0, bn_head=False, concat_pooling=False)

    try:
        @register_backbone(family="dummy", tiny={"num_classes": 3})
        def dummy_net(**kwargs: Any) -> Dummy:
            """A throwaway model."""
            return Dummy(**kwargs)

        model = create_backbone("dummy_net", num_classes=3)
        assert list_backbones("dummy") == ["dummy_net"]
        assert family_of("dummy_net") == "dummy"  # a new family is tagged by its own name, not folded into another
        assert model.constructor == {"name": "dummy_net", "kwargs": {"num_classes": 3}}
        assert model(torch.randn(2, 12, 10)).shape == (2, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(name="xresnet1d18")(dummy_net)
    finally:
        registry_module._REGISTRY.pop("dummy_net", None)
    assert "dummy_net" not in list_backbones()


def test_families_are_named_by_the_registry_and_ranked_by_the_order_given() -> None:
    assert [family_of(n) for n in ("xresnet1d50_small", "resnet1d_wang_small", "inception1d_small")] == [
        "xresnet", "resnet", "inception"]
    assert family_of("not_registered") == "not_registered"
    order = ("inception1d_small", "xresnet1d18")
    assert sorted(["xresnet", "zeta", "inception", "resnet"], key=lambda f: family_rank(f, order)) == [
        "inception", "xresnet", "resnet", "zeta"]


def test_kwargs_must_be_json_values() -> None:
    with pytest.raises(TypeError, match="JSON"):
        create_backbone("xresnet1d18", width=object())


def test_constructor_unknown_outside_the_registry() -> None:
    model = XResNet1d(layers=[1], bottleneck=False, width=0.125)
    with pytest.raises(RuntimeError, match="create_backbone"):
        _ = model.constructor


# architecture facts --------------------------------------------------------------------------------------------
# Full-size parameter counts with 71 classes (the PTB-XL "all" task). Strodthoff et al.'s xresnet1d101 keeps 64
# channels in every stage, hence ~1.9 M parameters (fastai's 64/128/256/512 widths would give ~33.6 M).
FULL_SIZE_PARAMETERS = {
    "xresnet1d18": 373_447,
    "xresnet1d34": 703_175,
    "xresnet1d50": 962_503,
    "xresnet1d101": 1_880_775,
    "resnet1d_wang": 481_863,
    "inception1d": 516_167,
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE_PARAMETERS))
def test_full_size_parameter_counts(name: str) -> None:
    assert count_parameters(create_backbone(name)) == FULL_SIZE_PARAMETERS[name]


def test_xresnet_layout_matches_strodthoff() -> None:
    model = create_backbone("xresnet1d101")
    assert [len(stage) for stage in model.stages] == [3, 4, 23, 3]
    stem_convs = [m for m in model.stem.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in stem_convs] == [
        (12, 32, 5, 2), (32, 32, 5, 1), (32, 64, 5, 1)]
    assert isinstance(model.stem[-1], nn.MaxPool1d)
    assert model.num_features == 2 * 256
    first = model.stages[1][0]  # stride-2 block: avg-pool shortcut (ResNet-D), zero-initialised last BN
    assert isinstance(first.shortcut[0], nn.AvgPool1d)
    assert torch.count_nonzero(first.convs[-1][1].weight) == 0
    hidden = [type(m).__name__ for m in model.head.hidden]
    assert hidden == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout"]
    assert [m.p for m in model.head.hidden if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    assert model.head.fc.in_features == 128
    wide = create_backbone("xresnet1d50", widths=[64, 128, 256, 512])
    assert wide.num_features == 2 * 2048


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="odd"):
        create_backbone("xresnet1d18", kernel_size=4)
    with pytest.raises(ValueError, match="multiple of 3"):
        create_backbone("inception1d", depth=4)
    with pytest.raises(ValueError, match="one dropout per Linear"):
        create_backbone("resnet1d_wang", ps=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"\[batch, 12 leads, samples\]"):
        _tiny("xresnet1d18")(torch.randn(2, 3, 50))


# every backbone ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_for_any_leads_and_length(name: str) -> None:
    for leads in (12, 3):
        model = _tiny(name, in_channels=leads).eval()
        for length in (97, 250):
            x = torch.randn(2, leads, length)
            with torch.no_grad():
                features = model.forward_features(x)
                logits = model(x)
            assert features.shape == (2, model.num_features)
            assert logits.shape == (2, model.num_classes) == (2, 5)
            assert torch.isfinite(logits).all()
            assert torch.allclose(model.forward_head(features), logits)


@pytest.mark.parametrize("name", NAMES)
def test_a_few_training_steps_lower_the_loss(name: str) -> None:
    model = _tiny(name).train()
    x, y = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_reference_outputs(name: str, fixture_arrays: dict[str, np.ndarray]) -> None:
    regen = "regenerate deliberately with: .venv/bin/python -m tests.models.make_reference_outputs " + name
    precision = str(fixture_arrays.get("dtype"))
    assert precision == str(REFERENCE_DTYPE), f"{FIXTURE.name} has {precision} outputs, not {REFERENCE_DTYPE}; {regen}"
    assert f"{name}.init" in fixture_arrays, f"no reference outputs for {name}; {regen}"
    assert str(fixture_arrays[f"{name}.tiny"]) == tiny_kwargs_json(name), f"tiny kwargs of {name} changed; {regen}"
    for kind, out in reference_outputs(name).items():
        np.testing.assert_allclose(out, fixture_arrays[f"{name}.{kind}"], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name} ({kind}) no longer reproduces its reference outputs; if the "
                                           f"architecture change is intended, {regen}")


def _first_relu_leaky(model: Backbone) -> bool:
    found = next(((p, k) for p in model.modules() for k, c in p.named_children() if isinstance(c, nn.ReLU)), None)
    if found is None:  # a family without ReLU modules (S4D: functional GELU)
        return False
    setattr(found[0], found[1], nn.LeakyReLU(0.01))
    return True


def _middle_conv_reflects(model: Backbone) -> bool:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1]
    if not convs:  # only 1x1 convolutions (S4D), whose padding is none
        return False
    convs[len(convs) // 2].padding_mode = "reflect"
    return True


def _one_weight_nudged(model: Backbone) -> bool:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    with torch.no_grad():
        convs[len(convs) // 2].weight.view(-1)[0] += 1e-6
    return True


def _one_step_size_nudged(model: Backbone) -> bool:
    steps = [p for n, p in model.named_parameters() if n.endswith("log_dt")]
    if not steps:  # not a state-space model
        return False
    with torch.no_grad():
        steps[0].view(-1)[0] += 1e-6
    return True


@pytest.mark.parametrize("name", NAMES)
def test_reference_tolerance(name: str) -> None:
    """The tolerance sits far above what another CPU's kernels change and far below what a changed layer does.

    Kernels: float32 outputs differ from the float64 ones of the same network by the float32 kernels' rounding
    (measured 1e-5 to 1e-4, the size of the AVX2 / AVX-512 disagreement that broke float32 references); float64
    kernels round 2**29 times finer, so another CPU moves float64 outputs by about that rounding x 2**-29
    (~1e-13; measured here: AVX2, SSE4.1 and AVX-512 kernels bit-identical, 1 vs 2 threads 4e-15). The bound
    asks 100x more than that estimate of room below the tolerance. A changed layer (an activation, one
    convolution's padding, one weight or one SSM step
    size moved by 1e-6; those that apply) must fail the comparison the reference test makes.
    """
    exact = reference_outputs(name)
    rounded = reference_outputs(name, torch.float32)
    for kind, out in exact.items():
        float32_rounding = float(np.abs(rounded[kind] - out).max())
        assert 0 < float32_rounding < 1e-3, f"{name} ({kind}): float32 and float64 runs are not the same network"
        kernel_bound = 100 * float32_rounding * torch.finfo(torch.float64).eps / torch.finfo(torch.float32).eps
        assert kernel_bound < ATOL + RTOL * float(np.abs(out).min()), f"{name} ({kind}): {kernel_bound:.2g}"
    applied = 0
    for change in (_first_relu_leaky, _middle_conv_reflects, _one_weight_nudged, _one_step_size_nudged):
        model = tiny_model(name)
        if not change(model):
            continue
        applied += 1
        changed = outputs_of(model)
        worst = max(float(np.abs(changed[k] - exact[k]).max()) for k in exact)
        with pytest.raises(AssertionError):
            for kind in exact:
                np.testing.assert_allclose(changed[kind], exact[kind], rtol=RTOL, atol=ATOL)
        assert worst > 100 * ATOL, f"{name}: {change.__name__} moves the outputs by only {worst:.2g}"
    assert applied >= 2, f"{name}: fewer than two architecture changes apply to it"


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_changes_width_and_keeps_features(name: str) -> None:
    model = tiny_model(name)
    perturb_batchnorm(model)
    model.eval()
    x = reference_input()
    with torch.no_grad():
        features = model.forward_features(x)
        hidden = model.head.hidden(features)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert torch.equal(model.forward_features(x), features)
        assert torch.equal(model.head.hidden(features), hidden)  # Strodthoff swaps only the last Linear
    assert model.num_classes == 7 and model.constructor["kwargs"]["num_classes"] == 7

    model.reset_classifier(4, reset_hidden=True)
    with torch.no_grad():
        assert model(x).shape == (2, 4)
        assert torch.equal(model.forward_features(x), features)
    model.freeze("head")
    model.reset_classifier(3)  # new parameters follow the head group's freeze state
    assert not any(p.requires_grad for p in model.head.parameters())
    model.unfreeze()
    model.reset_classifier(2)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_groups_cover_every_parameter_once_in_order(name: str) -> None:
    model = tiny_model(name)
    groups = model.parameter_groups()
    names = [g for g, _ in groups]
    stages = [g for g in names if g.startswith("stage")]
    assert names == (["stem"] if model.stem is not None else []) + stages + ["head"]
    assert stages == [f"stage{i}" for i in range(1, len(stages) + 1)] and len(stages) >= 1
    flat = [id(p) for _, params in groups for p in params]
    assert flat == [id(p) for p in model.parameters()]  # each once, input to output
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv1d))
    assert id(first_conv.weight) in {id(p) for p in groups[0][1]} and first_conv.in_channels == model.in_channels
    assert id(model.head.fc.weight) in {id(p) for p in groups[-1][1]}


def _bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


@pytest.mark.parametrize("name", NAMES)
def test_freezing_stops_gradients_and_batchnorm_statistics(name: str) -> None:
    model = _tiny(name)
    frozen = model.group_names[:-1][:2]  # the first two groups, never the head
    model.freeze(frozen)
    model.train()
    assert model.frozen_groups == frozen
    modules = dict(model.group_modules())
    for group, module in modules.items():
        for m in module.modules():
            if isinstance(m, BN):
                assert m.training == (group not in frozen), (group, m)
    before = {g: (_bn_buffers(m), [p.clone() for p in m.parameters()]) for g, m in modules.items()}
    x, y = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        for g, params in model.parameter_groups():
            assert all((p.grad is None) == (g in frozen) for p in params), g
        optimizer.step()
    for g, module in modules.items():
        buffers, params = before[g]
        same_buffers = all(torch.equal(v, buffers[k]) for k, v in module.named_buffers())
        same_params = all(torch.equal(a, b) for a, b in zip(module.parameters(), params, strict=True))
        assert same_buffers == same_params == (g in frozen), g

    model.unfreeze()
    assert model.frozen_groups == [] and all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules() if isinstance(m, BN))
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_gradual_unfreezing(name: str) -> None:
    model = _tiny(name)
    names = model.group_names
    for n in range(1, len(names) + 1):
        model.unfreeze_last(n)
        trainable = [g for g, params in model.parameter_groups() if all(p.requires_grad for p in params)]
        assert trainable == names[len(names) - n:]
    model.unfreeze_last(1, train_bn=True)  # fastai's train_bn: BN of frozen groups keeps learning
    model.train()
    bns = [m for g, mod in model.group_modules() if g != "head" for m in mod.modules() if isinstance(m, BN)]
    assert bns and all(m.training and m.weight.requires_grad for m in bns)
    with pytest.raises(ValueError, match="unknown parameter group"):
        model.freeze("stage99")


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_constructor_rebuild_an_identical_model(name: str) -> None:
    model = tiny_model(name)
    perturb_batchnorm(model, seed=1)
    model.reset_classifier(3)
    spec = json.loads(json.dumps(model.constructor))
    assert spec == model.constructor and spec["name"] == name
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(12345)  # a different init, overwritten by the weights
    clone = rebuild_backbone(spec, torch.load(buffer, weights_only=True))
    assert clone.constructor == spec
    model.eval()
    clone.eval()
    x = reference_input()
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    model.unfreeze_last(1)
    copied = copy.deepcopy(model)  # e.g. a best-model snapshot: constructor and freeze state travel along
    assert copied.constructor == spec and copied.frozen_groups == model.frozen_groups


def test_unknown_backbone_kwargs_are_named_before_training() -> None:
    from click.testing import CliRunner

    from ecgml.cli import main
    from ecgml.models import check_backbone_kwargs

    with pytest.raises(ValueError, match=r"takes no argument 'widht' \(it takes .*width"):
        check_backbone_kwargs("xresnet1d18", {"widht": 0.5})
    with pytest.raises(ValueError, match="num_classes is set by the data"):
        check_backbone_kwargs("inception1d", {"num_classes": 3})
    check_backbone_kwargs("xresnet1d18", {"width": 0.25, "layers": [1, 1]})
    done = CliRunner().invoke(main, ["pretrain", "--backbone", "resnet1d_wang", "--backbone-kwargs", '{"depth": 3}'])
    assert done.exit_code == 2 and "backbone 'resnet1d_wang' takes no argument 'depth'" in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
