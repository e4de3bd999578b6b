"""``make_update_step``: one optimizer update of a loss, optionally under ``torch.compile``.

An update is ``zero_grad -> loss -> backward -> clip -> step``. Compiled, it runs as two
compiled parts: the loss with its total (one graph; AOTAutograd compiles its backward, at
the first ``backward()``), and the gradient clipping with ``optimizer.step()`` (compiled the
way PyTorch's "Compiling the optimizer with torch.compile" recipe does it: a function
calling ``step()``, without ``fullgraph``, since ``step()`` graph-breaks around its body on
purpose; the clipping is the graph before it). One part fewer than clipping apart: each
compiled call checks its guards over every parameter (DQN's step on a 256x256 MLP: 831 ->
792 us). A part that fails to compile falls back before the parameters or the optimizer changed: the
loss and its backward run before the step, and the loss's buffers (e.g. ``KLPENPPOLoss``'s
adaptive ``beta``) are put back before the eager rerun. That part and the rest of the update
then run eager, and so does every later call.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from rlblocks.core.fast_td import detached, fast_set
from rlblocks.core.utils import TORCH_COMPILE_ARGS, error_summary
from rlblocks.objectives._losses.base import LossModule, total_loss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["UpdateStep", "make_update_step"]


class UpdateStep:
    """One gradient update of a loss: what a training loop does per minibatch.

    Built by :func:`make_update_step` (see there for the arguments). Calling it with a batch
    runs ``optimizer.zero_grad(set_to_none=True)``, ``loss_module(batch)``,
    ``total_loss(out).backward()``, the optional gradient clipping and ``optimizer.step()``.
    Gradients stay in ``.grad`` until the next call.

    Attributes:
        loss_module: The loss.
        optimizer: The optimizer stepped at each call.
        max_grad_norm: The clipping threshold, or ``None``.
        compiled: Whether calls run the compiled path; ``False`` when compiling was not
            asked for, is unavailable, or failed (the step then runs eager, same results).

    Example:
        >>> update = make_update_step(loss, torch.optim.Adam(loss.parameters()), compile=True)
        >>> out = update(minibatch)       # detached loss terms (+ "grad_norm" when clipping)
        >>> update.compiled
        True
    """

    def __init__(
        self,
        loss_module: nn.Module,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float | None,
        compile_kwargs: dict[str, Any] | None,
        terms: tuple[str, ...] | None = None,
    ) -> None:
        self.loss_module = loss_module
        self.terms = terms
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        # "forward", "step" -> the compiled part; empty when running eager.
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._warm = False  # whether a compiled call went through (compiling is done)
        if compile_kwargs is not None:
            self._compile(compile_kwargs)

    @property
    def compiled(self) -> bool:
        """Whether calls run the compiled path (``False`` after a fallback)."""
        return bool(self._compiled)

    def __repr__(self) -> str:
        return (
            f"UpdateStep({type(self.loss_module).__name__}, {type(self.optimizer).__name__}, "
            f"max_grad_norm={self.max_grad_norm}, compiled={self.compiled})"
        )

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Run one update on ``batch``.

        Args:
            batch: What the loss reads (a minibatch).

        Returns:
            The loss's output, detached, plus ``"grad_norm"`` (the total gradient norm before
            clipping) when ``max_grad_norm`` is set.

        Raises:
            ObjectiveConfigError: ``batch`` is not a TensorDict.
            MissingInputError: The loss's own errors, as in an eager call (nothing is
                stepped then).
        """
        if not isinstance(batch, TensorDictBase):
            raise ObjectiveConfigError(
                f"UpdateStep({type(self.loss_module).__name__}) takes a TensorDict batch, got "
                f"{type(batch).__name__}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        out = self._run("forward", self._forward_backward, batch)
        result = detached(out)
        norm = self._run("step", self._clip_and_step)
        if norm is not None:
            fast_set(result, "grad_norm", norm.detach())
        return result

    # -- the parts, eager -----------------------------------------------------------------

    def _forward(self, batch: TensorDictBase) -> tuple[TensorDictBase, Tensor]:
        out = self.loss_module(batch)
        if self.terms is None:
            return out, total_loss(out)
        missing = [t for t in self.terms if t not in out.keys()]
        if missing:
            have = sorted(k for k in out.keys() if k.startswith("loss_"))
            raise ObjectiveConfigError(
                f"UpdateStep({type(self.loss_module).__name__}): terms {missing} are not in "
                f"the loss's output, which has {have}"
            )
        return out, sum(out.get(t) for t in self.terms)

    def _forward_backward(self, batch: TensorDictBase) -> TensorDictBase:
        out, total = self._forward(batch)
        total.backward()
        return out

    def _params(self) -> list[Tensor]:
        # Read at each call: a param group added later is clipped too.
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _clip_and_step(self) -> Tensor | None:
        """Clip (when ``max_grad_norm`` is set), step; the norm before clipping, or None."""
        norm = None
        if self.max_grad_norm is not None:
            norm = nn.utils.clip_grad_norm_(self._params(), self.max_grad_norm, foreach=True)
        self.optimizer.step()
        return norm

    # -- compiling ------------------------------------------------------------------------

    def _compile(self, kwargs: dict[str, Any]) -> None:
        if isinstance(self.loss_module, LossModule):
            self.loss_module._build_lazy_parts()
        # One set of compiled entries per update step: several losses in one process do
        # not share (and exhaust) the recompile limit of these methods' code.
        whole = {"fullgraph": True, "isolate_recompiles": True, **kwargs}
        try:
            forward = torch.compile(self._forward, **whole)
            # step() graph-breaks around its body on purpose; the clipping before it and
            # the body are a graph each. If compiling the body fails, the eager rerun clips
            # gradients the compiled clip already clipped: the same gradients again.
            step = torch.compile(self._clip_and_step, **{**whole, "fullgraph": False})
        except Exception as error:
            raise ObjectiveConfigError(
                f"make_update_step: torch.compile rejected compile={kwargs!r} "
                f"({type(error).__name__}: {error}); fix that argument, or pass compile=True "
                f"for torch.compile's defaults"
            ) from error

        def forward_with_backward(batch: TensorDictBase) -> TensorDictBase:
            # The backward of the compiled loss is compiled at its first run, here, so a
            # failure of either surfaces before the clip and the step.
            out, total = forward(batch)
            total.backward()
            return out

        if not kwargs.get("disable", False):
            self._compiled = {"forward": forward_with_backward, "step": step}

    def _run(self, part: str, eager: Callable[..., Any], *args: Any) -> Any:
        """The compiled ``part`` on ``args``; if it fails, ``eager`` and eager from now on."""
        compiled = self._compiled.get(part)
        if compiled is None:
            return eager(*args)
        # Compiling happens at the first calls: until a call went through, keep what the
        # loss's buffers held, so that a failed compiled forward leaves nothing changed.
        saved = None if self._warm else [b.clone() for b in self.loss_module.buffers()]
        try:
            result = compiled(*args)
        except Exception as error:
            failure = error
        else:
            self._warm = True
            return result
        if saved is not None:
            with torch.no_grad():
                for buffer, value in zip(self.loss_module.buffers(), saved):
                    buffer.copy_(value)
        if part == "forward":  # a backward that failed midway may have left gradients
            self.optimizer.zero_grad(set_to_none=True)
        # Bad input fails eager too, with the loss's own message: raised as is, and the
        # compiled path stays. Otherwise the failure was the compiler's.
        result = eager(*args)
        self._fall_back(failure)
        return result

    def _fall_back(self, error: Exception) -> None:
        self._compiled = {}
        warnings.warn(
            f"make_update_step: compiling the update step of {type(self.loss_module).__name__} "
            f"failed ({error_summary(error)}); it runs eager now, with the same results (pass "
            f"compile=False to skip compiling).",
            UserWarning,
            stacklevel=4,
        )


def make_update_step(
    loss_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float | None = None,
    compile: bool | Mapping[str, Any] = False,
    terms: Sequence[str] | None = None,
) -> UpdateStep:
    """Bundle a loss and its optimizer into one callable gradient update.

    Each call runs ``optimizer.zero_grad(set_to_none=True)``, the loss, ``backward()`` on
    :func:`total_loss`, ``clip_grad_norm_`` over the optimizer's parameters when
    ``max_grad_norm`` is set, and ``optimizer.step()``. Target networks are not touched:
    call :class:`SoftUpdate`/:class:`HardUpdate` after it.

    With ``compile``, the loss and its backward, the clipping and the optimizer step are
    compiled with ``torch.compile`` (the loss with ``fullgraph=True``: one graph or a
    fallback). Results equal eager ones. If compiling fails at a call (no C compiler for
    inductor, an op or construct the compiler does not support...), that call and all later
    ones run eager, after one ``UserWarning``; nothing is applied twice. A changing learning
    rate (a scheduler) recompiles the optimizer step at every change unless the optimizer
    holds it as a tensor (``Adam(params, lr=torch.tensor(3e-4))``), as PyTorch's compiled
    optimizer recipe advises; a new batch shape recompiles the loss once, dynamically.

    Args:
        loss_module: The loss, e.g. :class:`ClipPPOLoss`.
        optimizer: Stepped at each call; its parameters must be the loss's (built from
            ``loss_module.parameters()`` or a subset). Parameters of the loss outside it get
            gradients but are not stepped.
        max_grad_norm: Clip the total gradient norm to this value (> 0); ``math.inf``
            measures the norm without clipping. ``None``: no clipping.
        compile: ``True`` to compile with the defaults (inductor), or a dict of
            ``torch.compile`` keyword arguments (``{"backend": "aot_eager"}``,
            ``{"mode": "max-autotune"}``...).
        terms: The loss terms to minimize (e.g. ``("loss_qvalue",)`` for TD3's critic-only
            steps); ``None`` sums every ``loss_*`` term (:func:`total_loss`).

    Returns:
        The :class:`UpdateStep`; ``update.compiled`` says whether it runs compiled.

    Raises:
        ObjectiveConfigError: ``loss_module`` is not an ``nn.Module``, ``optimizer`` is not a
            ``torch.optim.Optimizer`` or steps parameters the loss does not have,
            ``max_grad_norm`` is not a number > 0, ``compile`` is neither a bool nor a
            dict of ``torch.compile`` arguments, or ``terms`` is not a non-empty sequence
            of ``loss_*`` names; at the first call, a term the loss does not output.

    Example:
        >>> loss = ClipPPOLoss(actor, critic)
        >>> optimizer = torch.optim.Adam(loss.parameters(), lr=3e-4)
        >>> update = make_update_step(loss, optimizer, max_grad_norm=0.5, compile=True)
        >>> for minibatch in batch.reshape(-1).split(64):
        ...     out = update(minibatch)  # loss_objective, loss_critic, ..., grad_norm
    """
    if not isinstance(loss_module, nn.Module):
        raise ObjectiveConfigError(
            f"make_update_step: loss_module must be a loss (an nn.Module such as ClipPPOLoss), "
            f"got {type(loss_module).__name__}"
        )
    name = type(loss_module).__name__
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ObjectiveConfigError(
            f"make_update_step: optimizer must be a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}; build one from the loss, e.g. "
            f"torch.optim.Adam(loss.parameters(), lr=3e-4)"
        )
    _check_optimizer_params(name, loss_module, optimizer)
    if max_grad_norm is not None and not (
        isinstance(max_grad_norm, numbers.Real)
        and not isinstance(max_grad_norm, bool)
        and max_grad_norm > 0
    ):
        raise ObjectiveConfigError(
            f"make_update_step: max_grad_norm must be a number > 0 (or None for no clipping), "
            f"got {max_grad_norm!r}"
        )
    if terms is not None:
        terms = tuple(terms) if not isinstance(terms, str) else (terms,)
        if not terms or not all(isinstance(t, str) and t.startswith("loss_") for t in terms):
            raise ObjectiveConfigError(
                f"make_update_step: terms must be a non-empty sequence of loss term names "
                f"such as ('loss_qvalue',), or None for every term; got {terms!r}"
            )
    return UpdateStep(
        loss_module,
        optimizer,
        None if max_grad_norm is None else float(max_grad_norm),
        _compile_kwargs(compile),
        terms,
    )


def _compile_kwargs(compile: object) -> dict[str, Any] | None:
    """``None`` (eager) or the ``torch.compile`` keyword arguments of ``compile``."""
    if isinstance(compile, bool):
        return {} if compile else None
    if not isinstance(compile, Mapping):
        raise ObjectiveConfigError(
            f"make_update_step: compile must be True, False or a dict of torch.compile "
            f"keyword arguments, got {type(compile).__name__} {compile!r}"
        )
    unknown = sorted(str(k) for k in compile if k not in TORCH_COMPILE_ARGS)
    if unknown:
        raise ObjectiveConfigError(
            f"make_update_step: compile has keys torch.compile does not take: {unknown}; "
            f"it takes {sorted(TORCH_COMPILE_ARGS)}"
        )
    return dict(compile)


def _check_optimizer_params(
    name: str, loss_module: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Raise if the optimizer steps parameters that are not the loss's."""
    own = {id(p) for p in loss_module.parameters()}
    stepped = [p for group in optimizer.param_groups for p in group["params"]]
    foreign = [p for p in stepped if id(p) not in own]
    if foreign:
        shapes = ", ".join(str(list(p.shape)) for p in foreign[:3])
        more = ", ..." if len(foreign) > 3 else ""
        raise ObjectiveConfigError(
            f"make_update_step: {len(foreign)} of the {len(stepped)} parameters the optimizer "
            f"steps are not parameters of the {name} (shapes {shapes}{more}); they would "
            f"never get a gradient from it. Build the optimizer from loss.parameters() (of "
            f"this loss object: a deep copy of a loss has parameters of its own)."
        )
