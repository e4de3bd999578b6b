""":class:`ActionMask`: the env's action spec follows the legal-action mask it reports."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import ACTION
from rlblocks.core.specs import Composite, MaskableSpec, TensorSpec
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform

__all__ = ["ActionMask"]


class ActionMask(Transform):
    """Mask the action spec with the legal actions the env reports at every step.

    The env writes a mask of the actions allowed in the current state (``mask_key``, bool
    or 0/1, ``[*batch, n]``) with each observation. After every reset and step this
    transform copies it into the env's action spec (a ``Categorical`` or ``OneHot``, through
    ``update_mask``), so that ``env.rand_action()``, ``env.action_spec.rand()`` and the
    collectors' random frames draw only legal actions, and ``action_spec.is_in`` rejects
    illegal ones: the env's own action check (``check_actions``, on by default) then refuses
    an illegal action before the env steps, naming the action and the batch index
    (:class:`~rlblocks.envs.InvalidActionError`). A state with no legal action (an
    episode's terminal one) leaves every action allowed there: the next step resets it.
    Policies read the same mask from the TensorDict: ``MaskedCategorical``
    (``in_keys={"logits": ..., "mask": "action_mask"}``),
    ``QValueModule(action_mask_key=...)`` and ``EGreedyModule(action_mask_key=...)``.
    TorchRL's name and arguments.

    Args:
        action_key: The action entry whose spec is masked.
        mask_key: The observation entry holding the mask.

    Raises:
        TransformError: The action spec is not a ``Categorical`` or ``OneHot`` one, or the
            env's observations have no ``mask_key``.

    Example:
        >>> env = TransformedEnv(make_env(), ActionMask())
        >>> td = env.reset()
        >>> env.rand_action(td)["action"]  # one of the actions td["action_mask"] allows
    """

    def __init__(
        self,
        action_key: NestedKey = ACTION,
        mask_key: NestedKey = "action_mask",
    ) -> None:
        super().__init__()
        self.action_key = action_key
        self.mask_key = mask_key

    # -- specs ----------------------------------------------------------------------------

    def _maskable(self, spec: TensorSpec | None) -> MaskableSpec:
        if not isinstance(spec, MaskableSpec):
            got = "no such entry" if spec is None else type(spec).__name__
            raise TransformError(
                f"ActionMask: the action {self.action_key!r} needs a Categorical or "
                f"OneHot spec to mask, got {got}. Fix: pass action_key= the discrete action "
                f"(masks of MultiCategorical or continuous actions are not supported)"
            )
        return spec

    def transform_action_spec(self, action_spec: Composite) -> Composite:
        spec = self._maskable(action_spec.get(self.action_key, None))
        if spec.mask is None:  # "masked from the start": samplers built now follow updates
            spec.update_mask(torch.ones(spec.mask_shape, dtype=torch.bool, device=spec.device))
        return action_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        if observation_spec.get(self.mask_key, None) is None:
            keys = sorted(str(k) for k in observation_spec.keys(True, True))
            raise TransformError(
                f"ActionMask: the env's observations have no {self.mask_key!r} to read "
                f"the legal actions from; they have {keys}. Fix: pass mask_key= the entry "
                f"holding the mask"
            )
        return observation_spec

    def _action_spec(self) -> MaskableSpec:
        env = self._enclosing_env()
        if env is None:
            raise TransformError(
                "ActionMask masks an env's action spec, so it only works inside a "
                "TransformedEnv: TransformedEnv(env, ActionMask())"
            )
        return self._maskable(env.full_action_spec.get(self.action_key, None))

    # -- env hooks ------------------------------------------------------------------------

    def _update(self, tensordict: TensorDictBase) -> TensorDictBase:
        mask = tensordict.get(self.mask_key, None)
        if mask is None:
            raise TransformError(
                f"ActionMask: the env returned no {self.mask_key!r} (it is in the "
                f"observation spec, so the env should write it at every reset and step)"
            )
        mask = mask.bool()
        mask = mask | ~mask.any(-1, keepdim=True)  # a terminal state: reset next anyway
        self._action_spec().update_mask(mask)
        return tensordict

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._update(tensordict_reset)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._update(next_tensordict)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Outside an env (a replay buffer, a plain TensorDict): nothing to do."""
        return tensordict

    def extra_repr(self) -> str:
        return f"action_key={self.action_key!r}, mask_key={self.mask_key!r}"
