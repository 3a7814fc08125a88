"""The optimizer of every training run: torch's AdamW, called without torch's dynamo guards.

Why: ``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` in ``torch._disable_dynamo``, and every ``step`` in a wrapper that imports
``torch._dynamo`` to place graph breaks. Outside ``torch.compile`` both do nothing, but the first call
imports ``torch._dynamo``: 2.6 s on 2 cores, a fifth of a short run's fixed cost (issue 24). The
optimizer never runs inside a compiled region here (``--compile`` compiles the model's forward only), so
:class:`EagerAdamW` calls the same methods' undecorated bodies. The update, the state and the
``state_dict`` format are torch's own: a checkpoint written by either class resumes in the other.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch


def _undecorated(method: Callable[..., Any]) -> Callable[..., Any]:
    """The body under torch's ``functools.wraps`` decorators, all of them (a profiling hook torch adds to
    a class's ``step`` when its first instance is built sits on top of the dynamo wrapper)."""
    return inspect.unwrap(method)


_ADAM_STEP = _undecorated(torch.optim.Adam.step)


class EagerAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` that never imports ``torch._dynamo`` (see the module doc)."""

    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    zero_grad = _undecorated(torch.optim.Optimizer.zero_grad)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One AdamW step, without gradients recorded (what torch's wrapper does for a non-differentiable
        optimizer, minus its graph breaks)."""
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):
            return _ADAM_STEP(self, closure)


def adamw(param_groups: list[dict[str, Any]]) -> torch.optim.AdamW:
    """The run's AdamW over ``param_groups`` (torch's defaults otherwise)."""
    return EagerAdamW(param_groups)
