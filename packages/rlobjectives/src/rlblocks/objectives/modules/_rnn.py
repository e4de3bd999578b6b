"""Recurrent TensorDict modules whose hidden state travels in the TensorDict.

In the default (step) mode the module reads one step per batch element, takes its hidden
state from the input (reset where ``is_init`` is set) and writes the new state under
``"next"``, so ``step_mdp`` hands it to the following step; the env carries the state with
the module's primer (``TensorDictPrimer(module.primer_specs())``). A missing state is an
error, never a silent restart of the memory. In recurrent mode (:meth:`set_recurrent_mode`)
it reads whole sequences ``[*batch, T, ...]`` at once, as a loss does: episodes that start
inside a sequence (``is_init``) restart from a zero state, padded steps (a
``("collector", "mask")`` as ``split_trajs`` writes) are skipped, and the first ``burn_in``
steps only warm the state up (no gradient).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rlblocks.core import IS_INIT, NEXT
from rlblocks.core.specs import Composite, Unbounded
from rlblocks.objectives.errors import MissingInputError, ObjectiveConfigError, ShapeMismatchError

MASK = ("collector", "mask")  # valid (not padded) steps, as split_trajs writes them

__all__ = ["LSTMModule", "GRUModule"]


class _RecurrentModule(TensorDictModuleBase):
    """Shared by :class:`LSTMModule` and :class:`GRUModule`."""

    _rnn_class: type[nn.RNNBase]
    _default_state_keys: tuple[str, ...]

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        num_layers: int = 1,
        *,
        in_key: NestedKey,
        out_key: NestedKey,
        state_keys: Sequence[NestedKey] | None = None,
        is_init_key: NestedKey = IS_INIT,
        bias: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        module: nn.RNNBase | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if module is None:
            if input_size is None or hidden_size is None:
                raise ObjectiveConfigError(f"{owner} needs input_size and hidden_size (or module=)")
            module = self._rnn_class(
                input_size,
                hidden_size,
                num_layers,
                bias=bias,
                dropout=dropout,
                batch_first=True,
                device=device,
            )
        elif not isinstance(module, self._rnn_class) or not module.batch_first:
            raise ObjectiveConfigError(
                f"{owner}: module must be a {self._rnn_class.__name__} built with "
                f"batch_first=True, got {module!r}"
            )
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise ObjectiveConfigError(
                f"{owner}: bidirectional or projected RNNs are not supported"
            )
        self.rnn = module
        states = list(state_keys) if state_keys is not None else list(self._default_state_keys)
        if len(states) != len(self._default_state_keys):
            raise ObjectiveConfigError(
                f"{owner} keeps {len(self._default_state_keys)} state tensor(s); "
                f"got state_keys={states}"
            )
        self.state_keys = states
        self.is_init_key = is_init_key
        self.mask_key: NestedKey = MASK
        self.burn_in = 0
        self.in_keys = [in_key, *states, is_init_key]
        self.out_keys = [out_key, *(_next(k) for k in states)]
        # Read when present: a missing state starts at zeros, a missing is_init resets nothing.
        self.optional_in_keys = [*states, is_init_key]
        self.recurrent_mode = False

    def set_recurrent_mode(self, mode: bool = True, *, burn_in: int = 0) -> _RecurrentModule:
        """Return a copy in recurrent (sequence) mode, or step mode; parameters are shared.

        Args:
            mode: Recurrent (sequence) mode.
            burn_in: In recurrent mode, run the first ``burn_in`` steps of each sequence
                without gradient, only to bring the stored state up to date (R2D2's burn-in);
                their outputs are still written, detached.
        """
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
            raise ObjectiveConfigError(
                f"{type(self).__name__}.set_recurrent_mode: burn_in must be an int >= 0, got "
                f"{burn_in!r}"
            )
        other = copy.copy(self)
        other.recurrent_mode = mode
        other.burn_in = burn_in
        return other

    def primer_specs(self) -> Composite:
        """The specs of the state entries, ``[num_layers, hidden_size]`` each (no batch dims)."""
        shape = (self.rnn.num_layers, self.rnn.hidden_size)
        return Composite({key: Unbounded(shape=shape) for key in self.state_keys})

    def make_tensordict_primer(self) -> Any:
        """TorchRL's way to get the primer; here it is built from :meth:`primer_specs`.

        Raises:
            ObjectiveConfigError: Always, saying what to write: rlblocks-objectives does not
                depend on rlblocks-envs, which owns ``TensorDictPrimer``.
        """
        raise ObjectiveConfigError(
            f"{type(self).__name__}.make_tensordict_primer: rlblocks.objectives does not depend "
            f"on rlblocks.envs, which holds TensorDictPrimer. Write "
            f"env.append_transform(TensorDictPrimer(module.primer_specs())) (from "
            f"rlblocks.envs import TensorDictPrimer), and InitTracker() for "
            f"{self.is_init_key!r}"
        )

    def _initial_states(
        self, tensordict: TensorDictBase, rows: int, like: torch.Tensor, first_step: bool
    ) -> list[torch.Tensor]:
        """The stored hidden states ``[rows, layers, hidden]``."""
        states = []
        for key in self.state_keys:
            value = tensordict.get(key, None)
            if value is None:
                raise MissingInputError(
                    f"{type(self).__name__}: the input has no {key!r}, the recurrent state the "
                    f"module carries from step to step (without it the memory would silently "
                    f"restart at every call). Fix: add the module's primer to the env, "
                    f"env.append_transform(TensorDictPrimer(module.primer_specs())), so that "
                    f"every step and every stored transition carries the state (and "
                    f"InitTracker() for {self.is_init_key!r}); to start from zeros on purpose, "
                    f"write zeros there"
                )
            if first_step:  # sequences: the state stored with the first step
                value = value.select(tensordict.batch_dims - 1, 0)
            expected = (self.rnn.num_layers, self.rnn.hidden_size)
            if tuple(value.shape[-2:]) != expected:
                raise ShapeMismatchError(
                    f"{type(self).__name__}: {key!r} has shape {list(value.shape)}, expected "
                    f"[*batch, {expected[0]}, {expected[1]}] (num_layers, hidden_size)"
                )
            states.append(value.reshape(rows, *expected))
        return states

    def _run(
        self, x: torch.Tensor, states: list[torch.Tensor], lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the RNN on ``x [rows, T, F]`` from ``states [rows, layers, hidden]``."""
        hidden = [s.transpose(0, 1).contiguous() for s in states]
        h0 = tuple(hidden) if len(hidden) > 1 else hidden[0]
        if lengths is None:
            y, hn = self.rnn(x, h0)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, hn = self.rnn(packed, h0)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        hn = list(hn) if isinstance(hn, tuple) else [hn]
        return y, [h.transpose(0, 1) for h in hn]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Run one step (step mode) or whole sequences (recurrent mode); see the class doc."""
        if self.recurrent_mode:
            return self._forward_sequence(tensordict)
        x = tensordict.get(self.in_keys[0])
        batch = tensordict.batch_size
        rows = batch.numel()
        states = self._initial_states(tensordict, rows, x, first_step=False)
        is_init = tensordict.get(self.is_init_key, None)
        if is_init is not None:
            reset = is_init.reshape(rows, 1, 1)
            states = [torch.where(reset, 0.0, s) for s in states]
        y, new_states = self._run(x.reshape(rows, 1, -1), states)
        tensordict.set(self.out_keys[0], y.reshape(*batch, -1))
        for key, state in zip(self.out_keys[1:], new_states):
            tensordict.set(key, state.reshape(*batch, *state.shape[1:]))
        return tensordict

    def _forward_sequence(self, tensordict: TensorDictBase) -> TensorDictBase:
        owner = type(self).__name__
        if tensordict.batch_dims < 1:
            raise ShapeMismatchError(
                f"{owner} in recurrent mode needs a TensorDict of sequences, "
                f"batch_size [*batch, T]; got {list(tensordict.batch_size)}"
            )
        x = tensordict.get(self.in_keys[0])
        batch = tensordict.batch_size
        steps = batch[-1]
        rows = batch[:-1].numel()
        x = x.reshape(rows, steps, -1)
        states = self._initial_states(tensordict, rows, x, first_step=True)
        is_init = tensordict.get(self.is_init_key, None)
        if is_init is None:
            raise MissingInputError(
                f"{owner} in recurrent mode needs {self.is_init_key!r} to know where episodes "
                f"start inside the sequences (it would otherwise carry the memory across "
                f"episodes). Fix: add InitTracker() to the env that collected the data"
            )
        is_init = is_init.reshape(rows, steps)
        mask = tensordict.get(self.mask_key, None)
        valid = None if mask is None else mask.reshape(rows, steps).bool()
        if 0 < self.burn_in < steps:
            k = self.burn_in
            with torch.no_grad():
                head, states = self._sequence(
                    x[:, :k], states, is_init[:, :k], None if valid is None else valid[:, :k]
                )
            tail, final = self._sequence(
                x[:, k:], states, is_init[:, k:], None if valid is None else valid[:, k:]
            )
            y = torch.cat([head, tail], 1)
        else:
            y, final = self._sequence(x, states, is_init, valid)
        tensordict.set(self.out_keys[0], y.reshape(*batch, -1))
        for key, state in zip(self.out_keys[1:], final):
            # Only the state after the last step is known without a step-by-step loop.
            out = state.new_zeros(rows, steps, *state.shape[1:])
            out[:, -1] = state
            tensordict.set(key, out.reshape(*batch, *state.shape[1:]))
        return tensordict

    def _sequence(
        self,
        x: torch.Tensor,
        states: list[torch.Tensor],
        is_init: torch.Tensor,
        valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs ``[rows, T, H]`` and the states after each row's last valid step."""
        states = [torch.where(is_init[:, :1, None], 0.0, s) for s in states]
        resets_inside = x.shape[1] > 1 and bool(is_init[:, 1:].any())
        if not resets_inside and (valid is None or bool(valid.all())):
            return self._run(x, states)
        return self._run_segments(x, states, is_init, valid)

    def _run_segments(
        self,
        x: torch.Tensor,
        states: list[torch.Tensor],
        is_init: torch.Tensor,
        valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run each episode segment of each row as its own padded sequence; padded steps
        (``valid`` False, after a row's valid ones) are left out and output zeros."""
        rows, steps = is_init.shape
        if valid is None:
            valid = torch.ones_like(is_init)
        starts = is_init.clone()
        starts[:, 0] = True
        segment = torch.cumsum(starts.reshape(-1).long(), 0) - 1  # segment id of each step
        t = torch.arange(steps, device=x.device).expand(rows, steps)
        begin = torch.where(starts, t, 0).cummax(1).values
        position = (t - begin).reshape(-1)
        count = int(segment[-1]) + 1
        keep = valid.reshape(-1)
        seg, pos = segment[keep], position[keep]
        lengths = torch.bincount(seg, minlength=count).clamp(min=1)  # empty ones: ignored
        padded = x.new_zeros(count, int(lengths.max()), x.shape[-1])
        padded[seg, pos] = x.reshape(rows * steps, -1)[keep]
        first_of_row = segment.reshape(rows, steps)[:, 0]
        seg_states = []
        for state in states:
            seg_state = state.new_zeros(count, *state.shape[1:])
            seg_state[first_of_row] = state
            seg_states.append(seg_state)
        y, final = self._run(padded, seg_states, lengths)
        out = y.new_zeros(rows * steps, y.shape[-1])
        out[keep] = y[seg, pos]
        last = (valid.long().sum(1) - 1).clamp(min=0)  # each row's last valid step
        last_of_row = segment.reshape(rows, steps).gather(1, last[:, None]).squeeze(1)
        return out.reshape(rows, steps, -1), [f[last_of_row] for f in final]


def _next(key: NestedKey) -> tuple[str, ...]:
    return (NEXT, *key) if isinstance(key, tuple) else (NEXT, key)


class LSTMModule(_RecurrentModule):
    """An ``nn.LSTM`` reading ``in_key`` and writing ``out_key``, hidden state in the TensorDict.

    Reads ``[in_key, "recurrent_state_h", "recurrent_state_c", "is_init"]`` and writes
    ``[out_key, ("next", "recurrent_state_h"), ("next", "recurrent_state_c")]``; states are
    shaped ``[*batch, num_layers, hidden_size]``. In recurrent mode only the state after the
    last step of each sequence is written (zeros at earlier steps).

    Args:
        input_size: Input features.
        hidden_size: Hidden features.
        num_layers: Stacked layers.
        in_key: Key of the input.
        out_key: Key of the output.
        state_keys: The two state keys (``h``, ``c``).
        is_init_key: Key of the episode-start flag.
        bias: Use biases.
        dropout: Dropout between layers.
        device: Device of the parameters.
        module: An existing ``nn.LSTM(batch_first=True)`` to wrap instead.

    Example:
        >>> lstm = LSTMModule(8, 16, in_key="embed", out_key="features")
        >>> td = lstm(TensorDict(embed=torch.randn(4, 8), batch_size=[4]))
        >>> td["next", "recurrent_state_h"].shape
        torch.Size([4, 1, 16])
        >>> training_lstm = lstm.set_recurrent_mode(True)  # for [batch, T] sequences
    """

    _rnn_class = nn.LSTM
    _default_state_keys = ("recurrent_state_h", "recurrent_state_c")


class GRUModule(_RecurrentModule):
    """An ``nn.GRU`` reading ``in_key`` and writing ``out_key``, hidden state in the TensorDict.

    Like :class:`LSTMModule` with one state key, ``"recurrent_state"``.

    Example:
        >>> gru = GRUModule(8, 16, in_key="embed", out_key="features")
        >>> gru(TensorDict(embed=torch.randn(4, 8), batch_size=[4]))["features"].shape
        torch.Size([4, 16])
    """

    _rnn_class = nn.GRU
    _default_state_keys = ("recurrent_state",)
