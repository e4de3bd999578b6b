"""Ensembles of critics: :class:`BatchedEnsemble` (one vmapped call) and re-initialized copies.

REDQ, CrossQ and TQC train ensembles of up to ten critics; evaluating them one after the
other costs one small kernel per layer and critic. :class:`BatchedEnsemble` stacks the
members' parameters and evaluates them all in one ``torch.vmap`` call instead.
"""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.parameter import is_lazy

from rlblocks.core.utils import check_int
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["BatchedEnsemble", "reinitialized_copies"]


def reinitialized_copies(module: nn.Module, n: int) -> list[nn.Module]:
    """``[module, copy_1, ...]`` (``n`` in all): the copies' layers are re-initialized.

    Each copy is a deep copy of ``module`` whose submodules with a ``reset_parameters``
    method (``nn.Linear``, :class:`BatchRenorm1d`...) are reset, so that the members of an
    ensemble start from different weights.
    """
    members = [module]
    for _ in range(n - 1):
        member = copy.deepcopy(module)
        for sub in member.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset) and not isinstance(sub, TensorDictModuleBase):
                reset()
        members.append(member)
    return members


def _assign(module: nn.Module, name: str, value: Tensor) -> None:
    """Replace the parameter or buffer ``name`` (dotted) of ``module`` by ``value``."""
    prefix, _, leaf = name.rpartition(".")
    owner = module.get_submodule(prefix)
    old = owner._parameters.get(leaf)
    if old is not None:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        owner._buffers[leaf] = value


class BatchedEnsemble(nn.Module):
    """``num_copies`` copies of a TensorDict module, evaluated together in one batched call.

    Copy 0 has ``module``'s weights; the others are re-initialized with the layers'
    ``reset_parameters``. Their parameters and buffers are stacked (``[num_copies, ...]``)
    in :attr:`stacked`, a copy of ``module`` holding the stacked tensors: they are what
    ``parameters()`` yields, an optimizer trains and ``state_dict`` saves. A call runs
    ``module``'s forward once under ``torch.vmap`` over them (with
    ``torch.func.functional_call``), not once per member. Buffers a layer updates in place
    (:class:`BatchRenorm1d`'s running statistics) are updated per member.

    A call returns a new TensorDict of the module's ``out_keys`` with batch size
    ``[num_copies, *batch]``; nothing is written into the input. Each member reads the same
    input; random layers (dropout) draw independently per member.

    Unlike tensordict's ``EnsembleModule``, copy 0 keeps ``module``'s initialization,
    ``parameters()`` holds the stacked tensors only, and a call can run a subset of the
    members, with their parameters detached, or in the other train/eval mode: what the
    losses of :class:`~rlblocks.objectives.REDQLoss`, :class:`~rlblocks.objectives.CrossQLoss`
    and :class:`~rlblocks.objectives.TQCLoss` need.

    Args:
        module: An initialized TensorDict module with ``in_keys`` and ``out_keys`` (e.g. a
            ``ValueOperator``).
        num_copies: Number of members.

    Attributes:
        in_keys: ``module``'s.
        out_keys: ``module``'s.
        num_copies: Number of members.
        stacked: ``module``'s structure holding the stacked parameters and buffers (never
            called itself).

    Raises:
        ObjectiveConfigError: ``num_copies`` is not a positive int, ``module`` has no
            ``in_keys``/``out_keys``, or it has uninitialized lazy layers.

    Example:
        >>> qvalue = ValueOperator(MLP(5, 1, num_cells=[64]), in_keys=["observation", "action"])
        >>> critics = BatchedEnsemble(qvalue, num_copies=10)
        >>> critics(batch)["state_action_value"].shape  # batch of 32
        torch.Size([10, 32, 1])
        >>> critics.member(0)  # a standalone copy of member 0, for inspection
    """

    def __init__(self, module: nn.Module, num_copies: int) -> None:
        super().__init__()
        owner = "BatchedEnsemble"
        self.num_copies = check_int(num_copies, "num_copies", owner, error=ObjectiveConfigError)
        if not (hasattr(module, "in_keys") and hasattr(module, "out_keys")):
            raise ObjectiveConfigError(
                f"{owner}: module must be a TensorDict module with in_keys and out_keys (e.g. "
                f"a ValueOperator), got {type(module).__name__}"
            )
        if any(is_lazy(t) for t in (*module.parameters(), *module.buffers())):
            raise ObjectiveConfigError(
                f"{owner}: module has uninitialized lazy layers; call it once on a sample "
                f"batch (e.g. module(batch)) before building the ensemble"
            )
        members = reinitialized_copies(module, self.num_copies)
        self.in_keys = list(module.in_keys)
        self.out_keys = list(module.out_keys)
        self.stacked = copy.deepcopy(module)
        for name, _ in module.named_parameters():
            stacked = torch.stack([m.get_parameter(name).detach() for m in members])
            _assign(self.stacked, name, stacked)
        for name, _ in module.named_buffers():
            _assign(self.stacked, name, torch.stack([m.get_buffer(name) for m in members]))
        # The forward runs on these skeletons with the stacked tensors swapped in: one per
        # mode, so that a call can pick eval mode (CrossQ's actor term) without flipping the
        # flag inside a compiled graph. On the meta device, out of the module tree: never
        # trained, saved or moved.
        template = copy.deepcopy(module).to("meta")
        self.__dict__["_templates"] = {
            True: template.train(),
            False: copy.deepcopy(template).eval(),
        }

    def _tensors(self, frozen: bool = False) -> dict[str, Tensor]:
        """``{name: stacked tensor}`` of the parameters (detached if ``frozen``) and buffers.

        A frozen target copy (``LossModule``'s ``target_<name>``) holds buffers only.
        """
        tensors = {name: p.detach() if frozen else p for name, p in self.stacked.named_parameters()}
        tensors.update(self.stacked.named_buffers())
        return tensors

    def forward(
        self,
        tensordict: TensorDictBase,
        *,
        members: Tensor | None = None,
        frozen: bool = False,
        training: bool | None = None,
    ) -> TensorDictBase:
        """Run the members on ``tensordict``.

        Args:
            tensordict: The input, read by every member.
            members: Indices of the members to run (REDQ's random subset), ``None`` for all.
                The buffers of a subset are copies: in-place updates of them are dropped.
            frozen: Detach the parameters: gradients reach the inputs (an action from an
                actor), never the members.
            training: Run in train (``True``) or eval (``False``) mode; ``None`` follows
                the ensemble's own mode.

        Returns:
            A TensorDict of ``out_keys``, batch size ``[n, *tensordict.batch_size]`` with
            ``n`` the number of members run.
        """
        state = self._tensors(frozen)
        if members is not None:
            state = {name: t.index_select(0, members) for name, t in state.items()}
        template = self._templates[self.training if training is None else bool(training)]
        keys = self.out_keys

        def run_member(member_state: dict[str, Tensor], data: TensorDictBase) -> tuple:
            out = functional_call(template, member_state, (data.copy(),))
            return tuple(out.get(key) for key in keys)

        values = torch.vmap(run_member, in_dims=(0, None), randomness="different")(
            state, tensordict
        )
        count = self.num_copies if members is None else members.shape[0]
        out = TensorDict({}, batch_size=[count, *tensordict.batch_size], device=tensordict.device)
        for key, value in zip(keys, values):
            out.set(key, value)
        return out

    def member(self, index: int) -> nn.Module:
        """A standalone copy of member ``index`` with its current parameters and buffers.

        For inspection and tests: changing the copy does not change the ensemble.
        """
        module = copy.deepcopy(self._templates[self.training])
        for name, value in self._tensors().items():
            _assign(module, name, value[index].detach().clone())
        return module

    def extra_repr(self) -> str:
        return f"num_copies={self.num_copies}"
