"""Key names that losses, estimators and modules read and write, on top of the core contract.

The vocabulary is TorchRL's, so that practitioners find the keys they expect.
"""

from __future__ import annotations

from collections.abc import Mapping

from tensordict.utils import NestedKey

from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = [
    "SAMPLE_LOG_PROB",
    "STATE_VALUE",
    "STATE_ACTION_VALUE",
    "ACTION_VALUE",
    "CHOSEN_ACTION_VALUE",
    "ADVANTAGE",
    "VALUE_TARGET",
    "TD_ERROR",
    "STEPS_TO_NEXT_OBS",
    "LOC",
    "SCALE",
    "LOGITS",
    "PARAM",
    "TensorKeys",
]

SAMPLE_LOG_PROB = "sample_log_prob"
"""Log-probability of the action under the policy that collected it."""
STATE_VALUE = "state_value"
"""``V(s)``, written by a :class:`~rlblocks.objectives.modules.ValueOperator`."""
STATE_ACTION_VALUE = "state_action_value"
"""``Q(s, a)`` for the action in the TensorDict (continuous-action critics)."""
ACTION_VALUE = "action_value"
"""``Q(s, .)``, one value per discrete action."""
CHOSEN_ACTION_VALUE = "chosen_action_value"
"""``Q(s, a)`` of the action chosen from ``action_value``."""
ADVANTAGE = "advantage"
VALUE_TARGET = "value_target"
TD_ERROR = "td_error"
"""``|target - prediction|`` per sample, written by value-based losses for prioritized replay."""
STEPS_TO_NEXT_OBS = "steps_to_next_obs"
"""How many steps separate ``("next", observation)`` from the root one, per sample (n-step
returns, written by ``rlblocks.buffers.MultiStepTransform``): targets then discount the
bootstrapped value by ``gamma ** steps_to_next_obs``."""
LOC = "loc"
SCALE = "scale"
LOGITS = "logits"
PARAM = "param"


class TensorKeys:
    """The keys a loss or estimator reads and writes, by role; renamed with ``set_keys``.

    Each role (``reward``, ``advantage``, ...) is an attribute holding a key; a nested key is
    a tuple. The roles themselves are fixed by the owner's ``default_keys``.

    Example:
        >>> keys = TensorKeys("GAE", {"advantage": "advantage"})
        >>> keys.update(advantage="adv")
        >>> keys.advantage
        'adv'
    """

    def __init__(self, owner: str, defaults: Mapping[str, NestedKey]) -> None:
        self._owner = owner
        self._keys: dict[str, NestedKey] = {name: _normalize(k) for name, k in defaults.items()}
        # Each role is also a plain attribute: losses read keys at every call.
        self.__dict__.update(self._keys)

    def __getattr__(self, name: str) -> NestedKey:
        # Only reached for names that are not roles.
        raise AttributeError(f"{self.__dict__.get('_owner')} has no key role {name!r}")

    def update(self, **keys: NestedKey) -> None:
        """Rename the keys of the given roles.

        Raises:
            ObjectiveConfigError: A role is unknown or a key is not a string or tuple of strings.
        """
        unknown = sorted(set(keys) - set(self._keys))
        if unknown:
            raise ObjectiveConfigError(
                f"{self._owner}.set_keys got unknown role(s) {unknown}; the roles are "
                f"{sorted(self._keys)}. Example: set_keys(reward='my_reward')."
            )
        for name, key in keys.items():
            self._keys[name] = _normalize(key, self._owner, name)
        self.__dict__.update(self._keys)

    def as_dict(self) -> dict[str, NestedKey]:
        """``{role: key}``."""
        return dict(self._keys)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={key!r}" for name, key in self._keys.items())
        return f"TensorKeys({inner})"


def _normalize(key: NestedKey, owner: str = "", role: str = "") -> NestedKey:
    if isinstance(key, list):
        key = tuple(key)
    if isinstance(key, tuple) and len(key) == 1:
        key = key[0]
    if not (
        isinstance(key, str) or (isinstance(key, tuple) and all(isinstance(k, str) for k in key))
    ):
        raise ObjectiveConfigError(
            f"{owner}.set_keys: the key for {role!r} must be a string or a tuple of strings "
            f"(a nested key), got {key!r}"
        )
    return key
