"""``export_policy``: a trained policy, with its env's observation transforms frozen into it,
as one self-contained file (``torch.export`` or ONNX) that needs no rlblocks to run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.errors import missing_dependency
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs.errors import ExportError

__all__ = ["export_policy", "EXPORT_FORMATS", "input_name"]

#: File suffix -> format of :func:`export_policy`.
EXPORT_FORMATS = {".pt2": "torch.export", ".onnx": "ONNX"}


def input_name(key: NestedKey) -> str:
    """The name an entry gets in an exported file: nested keys joined with dots."""
    return key if isinstance(key, str) else ".".join(key)


class _Pipeline(nn.Module):
    """Raw observations (positional, in ``in_keys`` order) -> the env's transforms -> the
    policy, deterministic -> the action entries (in ``out_keys`` order)."""

    def __init__(
        self, policy: Any, transform: nn.Module | None, in_keys: list, out_keys: list
    ) -> None:
        super().__init__()
        self.policy = policy
        self.transform = transform
        self.in_keys, self.out_keys = in_keys, out_keys

    def forward(self, *observations: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = observations[0].shape[:1]
        td = TensorDict(dict(zip(self.in_keys, observations)), batch_size=batch)
        if self.transform is not None:
            td = self.transform(td)
        td = self.policy(td)  # traced under ExplorationType.DETERMINISTIC (see _export)
        return tuple(td.get(key) for key in self.out_keys)


def _split_env(env: EnvBase) -> tuple[EnvBase, nn.Module | None]:
    """``(the innermost env, its transforms)``: a TransformedEnv's are applied in order."""
    base = getattr(env, "base_env", None)
    if base is None:
        return env, None
    inner, inner_transform = _split_env(base)
    transform = env.transform
    if inner_transform is None:
        return inner, transform
    return inner, nn.Sequential(inner_transform, transform)


def export_policy(
    policy: Any,
    env: EnvBase,
    path: str | os.PathLike,
    *,
    batch_size: int = 2,
) -> Path:
    """Write ``policy`` and ``env``'s observation transforms as one deployable file.

    The file maps the raw observations the (base) env produces to the actions the policy
    takes, deterministically (``ExplorationType.DETERMINISTIC``: the mean or mode), with
    every transform of ``env`` applied first as it would be to a plain TensorDict: an
    ``ObservationNorm``'s or a ``VecNorm``'s statistics are frozen in as constants (the
    values they hold now). Inputs are the raw observation entries the computation uses (a
    nested key is named with dots, e.g. ``"agents.observation"``), each with a leading
    batch dim of any size; outputs are the env's action entries, in the order of its action
    spec.

    Formats, by ``path``'s suffix: ``.pt2`` (``torch.export``; load with
    ``torch.export.load(path).module()``) and ``.onnx`` (ONNX, through
    ``torch.onnx.export``; needs ``pip install 'rlblocks-envs[onnx]'``; run it with
    ``onnxruntime``).

    Args:
        policy: The policy (a ``TensorDictModule``: reads observations, writes actions).
        env: The env it acts in, with the transforms it was trained with.
        path: Where to write (``.pt2`` or ``.onnx``); parent folders are created.
        batch_size: The batch size of the example traced (any batch size works after).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ExportError: An unknown suffix; a policy or transform that branches in Python on
            tensor values (or does anything else ``torch.export`` cannot trace), named with
            what it did; an action entry the policy does not write.
        MissingDependencyError: ``.onnx`` without ``onnx``/``onnxscript`` installed.

    Example:
        >>> export_policy(actor, TransformedEnv(GymEnv("Pendulum-v1"), VecNorm()), "pi.onnx")
        >>> session = onnxruntime.InferenceSession("pi.onnx")
        >>> session.run(None, {"observation": obs_batch})[0]  # the actions
    """
    path = Path(path)
    if path.suffix not in EXPORT_FORMATS:
        raise ExportError(
            f"export_policy: the path must end with one of {sorted(EXPORT_FORMATS)} (the "
            f"format), got {str(path)!r}"
        )
    base, transform = _split_env(env)
    obs_spec = base.full_observation_spec
    in_keys = list(obs_spec.keys(True, True))
    out_keys = list(env.full_action_spec.keys(True, True))
    examples = tuple(_example(obs_spec[key], base.batch_size, batch_size) for key in in_keys)
    pipeline = _Pipeline(policy, transform, in_keys, out_keys)
    modes = {module: module.training for module in pipeline.modules()}
    pipeline.eval()  # dropout off, batch norms on their running statistics
    try:
        program = _export(pipeline, examples)
        # Keep only the observations the computation reads (a simulator's state, say,
        # that no transform nor the policy uses, is no input of the deployed policy).
        used = _used_inputs(program, len(in_keys))
        if len(used) < len(in_keys):
            pipeline.in_keys = [in_keys[i] for i in used]
            examples = tuple(examples[i] for i in used)
            program = _export(pipeline, examples)
    finally:
        for module, training in modes.items():
            module.training = training
    # Tracing records one path through Python code: a branch on tensor values would be
    # baked in silently. The program must agree with the eager pipeline on new data.
    fresh = [
        tuple(_example(obs_spec[key], base.batch_size, 16) for key in pipeline.in_keys)
        for _ in range(4)
    ]
    _check_same(program, pipeline, fresh)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt2":
        torch.export.save(program, path)
    else:
        _to_onnx(program, examples, pipeline.in_keys, out_keys, path)
    return path


def _example(spec: Any, env_batch: torch.Size, batch_size: int) -> torch.Tensor:
    """``batch_size`` observations of one env element: the env's batch dims dropped."""
    rows = spec.rand().reshape(-1, *spec.shape[len(env_batch) :])
    return rows[torch.arange(batch_size) % rows.shape[0]]


def _export(pipeline: _Pipeline, examples: tuple[torch.Tensor, ...]) -> Any:
    batch = torch.export.Dim.DYNAMIC
    shapes = (tuple({0: batch} for _ in examples),)  # forward(*observations): one argument
    try:
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            outputs = pipeline(*examples)  # an eager run first: plain errors come out plainly
    except KeyError as err:
        raise _keys_error(pipeline, str(err)) from err
    missing = [key for key, value in zip(pipeline.out_keys, outputs) if value is None]
    if missing:
        raise _keys_error(pipeline, f"it wrote no {missing}")
    # Distributions check their parameters' values by default (data-dependent, which
    # torch.export cannot trace); the eager run above has checked them. The user's own
    # setting is put back afterwards.
    validating = _distributions_validate()
    D.Distribution.set_default_validate_args(False)
    try:
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            return torch.export.export(pipeline, examples, dynamic_shapes=shapes, strict=False)
    except Exception as err:  # torch.export's errors have many types
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        data_dependent = "data-dependent" in str(err) or "GuardOnDataDependent" in repr(type(err))
        hint = (
            "it branches in Python on tensor values (an `if` on a tensor, .item(), "
            "a loop over a tensor's contents); write the branch with torch.where, or "
            "export a policy without it"
            if data_dependent
            else "torch.export could not trace it"
        )
        owner = type(pipeline.policy).__name__
        raise ExportError(
            f"export_policy: the policy ({owner}) or the env's transforms cannot be "
            f"exported: {hint}. torch.export said: {text}"
        ) from err
    finally:
        D.Distribution.set_default_validate_args(validating)


def _distributions_validate() -> bool:
    """Whether torch distributions validate their arguments now (torch has no getter: an
    invalid Bernoulli raises exactly when they do)."""
    try:
        D.Bernoulli(probs=torch.tensor(2.0))
    except ValueError:
        return True
    return False


def _keys_error(pipeline: _Pipeline, what: str) -> ExportError:
    return ExportError(
        f"export_policy: the policy reads or writes an entry the env does not provide "
        f"({what}); its inputs are the env's observations {pipeline.in_keys} (after its "
        f"transforms) and it must write the env's actions {pipeline.out_keys}"
    )


def _check_same(program: Any, pipeline: _Pipeline, inputs: list[tuple[torch.Tensor, ...]]) -> None:
    exported = program.module()
    for observations in inputs:
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            want, got = pipeline(*observations), exported(*observations)
        for key, a, b in zip(pipeline.out_keys, want, got):
            if not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5):
                raise ExportError(
                    f"export_policy: the exported program's {key!r} differs from the policy's "
                    f"on new observations: the policy ({type(pipeline.policy).__name__}) or a "
                    f"transform branches in Python on tensor values (an `if` on a tensor, "
                    f".item(), a loop over a tensor's contents), and tracing kept only the "
                    f"branch its example took. Write the branch with torch.where, or export "
                    f"a policy without it"
                )


def _used_inputs(program: Any, count: int) -> list[int]:
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    users = placeholders[-count:]  # parameters and buffers come first
    return [i for i, node in enumerate(users) if node.users]


def _to_onnx(
    program: Any,
    examples: tuple[torch.Tensor, ...],
    in_keys: list,
    out_keys: list,
    path: Path,
) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise missing_dependency("export_policy(... .onnx)", "onnx", "rlblocks-envs[onnx]") from err
    with warnings.catch_warnings():
        # torch's own exporter uses a pytree API torch deprecated; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        torch.onnx.export(
            program,
            examples,
            str(path),
            dynamo=True,
            input_names=[input_name(key) for key in in_keys],
            output_names=[input_name(key) for key in out_keys],
            external_data=False,
            verbose=False,
        )
