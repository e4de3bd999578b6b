"""Recurrent TensorDict modules whose hidden state travels in the TensorDict.

In the default (step) mode the module reads one step per batch element, takes its hidden
state from the input (zeros if absent, reset where ``is_init`` is set) and writes the new
state under ``"next"``, so ``step_mdp`` hands it to the following step. In recurrent mode
(:meth:`set_recurrent_mode`) it reads whole sequences ``[*batch, T, ...]`` at once, as a
loss does; episodes that start inside a sequence (``is_init``) restart from a zero state.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rlblocks.core import IS_INIT, NEXT
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError

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
        self.in_keys = [in_key, *states, is_init_key]
        self.out_keys = [out_key, *(_next(k) for k in states)]
        # Read when present: a missing state starts at zeros, a missing is_init resets nothing.
        self.optional_in_keys = [*states, is_init_key]
        self.recurrent_mode = False

    def set_recurrent_mode(self, mode: bool = True) -> _RecurrentModule:
        """Return a copy in recurrent (sequence) mode, or step mode; parameters are shared."""
        other = copy.copy(self)
        other.recurrent_mode = mode
        return other

    def _zero_state(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(rows, self.rnn.num_layers, self.rnn.hidden_size)

    def _initial_states(
        self, tensordict: TensorDictBase, rows: int, like: torch.Tensor, first_step: bool
    ) -> list[torch.Tensor]:
        """The stored hidden states ``[rows, layers, hidden]`` (zeros where absent)."""
        states = []
        for key in self.state_keys:
            value = tensordict.get(key, None)
            if value is None:
                states.append(self._zero_state(rows, like))
                continue
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
        if tensordict.batch_dims < 1:
            raise ShapeMismatchError(
                f"{type(self).__name__} in recurrent mode needs a TensorDict of sequences, "
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
            is_init = torch.zeros(rows, steps, dtype=torch.bool, device=x.device)
        is_init = is_init.reshape(rows, steps)
        states = [torch.where(is_init[:, :1, None], 0.0, s) for s in states]
        if steps > 1 and bool(is_init[:, 1:].any()):
            y, final = self._run_segments(x, states, is_init)
        else:
            y, final = self._run(x, states)
        tensordict.set(self.out_keys[0], y.reshape(*batch, -1))
        for key, state in zip(self.out_keys[1:], final):
            # Only the state after the last step is known without a step-by-step loop.
            out = state.new_zeros(rows, steps, *state.shape[1:])
            out[:, -1] = state
            tensordict.set(key, out.reshape(*batch, *state.shape[1:]))
        return tensordict

    def _run_segments(
        self, x: torch.Tensor, states: list[torch.Tensor], is_init: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run each episode segment of each row as its own padded sequence."""
        rows, steps = is_init.shape
        starts = is_init.clone()
        starts[:, 0] = True
        flat_starts = starts.reshape(-1)
        segment = torch.cumsum(flat_starts.long(), 0) - 1  # segment id of each step
        t = torch.arange(steps, device=x.device).expand(rows, steps)
        begin = torch.where(starts, t, 0).cummax(1).values
        position = (t - begin).reshape(-1)
        count = int(segment[-1]) + 1
        lengths = torch.bincount(segment, minlength=count)
        padded = x.new_zeros(count, int(lengths.max()), x.shape[-1])
        padded[segment, position] = x.reshape(rows * steps, -1)
        first_of_row = segment.reshape(rows, steps)[:, 0]
        seg_states = []
        for state in states:
            seg_state = state.new_zeros(count, *state.shape[1:])
            seg_state[first_of_row] = state
            seg_states.append(seg_state)
        y, final = self._run(padded, seg_states, lengths)
        last_of_row = segment.reshape(rows, steps)[:, -1]
        return y[segment, position].reshape(rows, steps, -1), [f[last_of_row] for f in final]


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
