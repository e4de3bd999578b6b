"""The nested, dict-like :class:`Composite` spec."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core._specs_base import (
    DeviceLike,
    NestedKey,
    ShapeLike,
    TensorSpec,
    as_device,
    as_size,
    fmt_key,
    resolve_expand_shape,
)
from rlblocks.core.errors import MissingKeyError, SpecError

__all__ = ["Composite"]

_MISSING: Any = object()


def _unravel(key: Any) -> tuple[str, ...]:
    """Turn ``"a"``, ``("a", "b")`` or ``("a", ("b", "c"))`` into a flat tuple of strings."""
    if isinstance(key, str):
        return (key,)
    if isinstance(key, tuple) and key:
        parts: list[str] = []
        for part in key:
            parts.extend(_unravel(part))
        return tuple(parts)
    raise SpecError(
        f"Composite keys must be str or non-empty tuples of str (nested keys), got {key!r}"
    )


def _public_key(key: tuple[str, ...]) -> NestedKey:
    """Top-level keys are plain strings, nested ones tuples (like ``TensorDict.keys``)."""
    return key[0] if len(key) == 1 else key


class Composite(TensorSpec):
    """A nested, dict-like spec of a TensorDict: one spec per (possibly nested) key.

    The composite has a batch ``shape`` with which every child's shape must start;
    ``rand``/``zero`` return a ``TensorDict`` of batch size ``[*shape, *self.shape]``. Keys are
    strings, and tuples of strings address nested entries (``spec["next", "reward"]``).

    All children live on the composite's device. When ``device`` is given, children passed
    to the constructor are moved to it; otherwise it is inferred from them (torch's default
    device for an empty composite). :meth:`set` rejects specs on another device.

    Args:
        spec_dict: A mapping (or Composite) from keys to specs; nested dicts become
            Composites with this batch shape.
        shape: The batch shape shared by all children.
        device: The device of all children (default: inferred from them).
        **specs: More ``key=spec`` entries.

    Raises:
        SpecError: If a child's shape does not start with ``shape`` or a value is not a spec.

    Example:
        >>> spec = Composite(observation=Unbounded(shape=(4,)), action=Categorical(2))
        >>> spec["next", "reward"] = Unbounded(shape=(1,))
        >>> spec.keys(include_nested=True, leaves_only=True)
        ['observation', 'action', ('next', 'reward')]
        >>> spec.is_in(spec.rand(8))
        True
    """

    def __init__(
        self,
        spec_dict: Mapping[NestedKey, Any] | Composite | None = None,
        shape: ShapeLike = (),
        device: DeviceLike = None,
        **specs: Any,
    ) -> None:
        self._init(spec_dict, as_size(shape), device, specs, prefix=(), move=device is not None)

    def _init(
        self,
        spec_dict: Any,
        shape: torch.Size,
        device: DeviceLike,
        specs: dict[str, Any],
        prefix: tuple[str, ...],
        move: bool,
    ) -> None:
        """Build from entries; ``prefix`` is this composite's key in error messages."""
        entries: list[tuple[Any, Any]] = []
        if isinstance(spec_dict, Composite):
            entries.extend(spec_dict._specs.items())
        elif isinstance(spec_dict, Mapping):
            entries.extend(spec_dict.items())
        elif spec_dict is not None:
            raise SpecError(
                f"Composite: spec_dict must be a mapping of keys to specs, got "
                f"{type(spec_dict).__name__}"
            )
        entries.extend(specs.items())
        # Nested dicts become Composites first, so that their device can be inferred too.
        entries = [
            (k, self._from_mapping(v, shape, device, (*prefix, *_unravel(k)), move))
            if isinstance(v, Mapping) and not isinstance(v, TensorSpec)
            else (k, v)
            for k, v in entries
        ]
        if device is None:
            device = self._infer_device(entries)
        TensorSpec.__init__(self, shape, None, as_device(device))
        self._specs: dict[str, TensorSpec] = {}
        for key, value in entries:
            self._set(_unravel(key), value, move=move, prefix=prefix)

    @classmethod
    def _from_mapping(
        cls,
        mapping: Mapping[NestedKey, Any],
        shape: torch.Size,
        device: DeviceLike,
        prefix: tuple[str, ...],
        move: bool,
    ) -> Composite:
        new = cls.__new__(cls)
        new._init(mapping, shape, device, {}, prefix, move)
        return new

    @staticmethod
    def _infer_device(entries: list[tuple[Any, Any]]) -> torch.device:
        """The one device of the given specs, or the default device when there are none."""
        devices: dict[torch.device, Any] = {}
        for key, value in entries:
            if isinstance(value, TensorSpec):
                devices.setdefault(value.device, key)
        if len(devices) > 1:
            listed = ", ".join(f"{key!r} on {dev}" for dev, key in devices.items())
            raise SpecError(
                f"Composite: specs live on different devices ({listed}); pass device=... to "
                f"move them all to one device"
            )
        return next(iter(devices)) if devices else as_device(None)

    @classmethod
    def _from_children(
        cls, children: dict[str, TensorSpec], shape: torch.Size, device: torch.device
    ) -> Composite:
        """Build without re-validating children that are known to fit."""
        new = cls.__new__(cls)
        TensorSpec.__init__(new, shape, None, device)
        new._specs = children
        return new

    # ------------------------------------------------------------------ dict interface
    def get(self, key: NestedKey, default: Any = _MISSING) -> Any:
        """Return the spec at ``key`` (a string or a tuple for nested keys).

        Args:
            key: The key.
            default: Returned when ``key`` is absent; without it a missing key raises.

        Returns:
            The spec (a leaf spec or a nested ``Composite``), or ``default``.

        Raises:
            KeyError: If ``key`` is absent and no default is given.
        """
        parts = _unravel(key)
        node: TensorSpec = self
        for i, part in enumerate(parts):
            child = node._specs.get(part) if isinstance(node, Composite) else None
            if child is None:
                if default is not _MISSING:
                    return default
                if not isinstance(node, Composite):
                    raise MissingKeyError(
                        f"Composite has no key {_public_key(parts)!r}: "
                        f"{_public_key(parts[:i])!r} is a {type(node).__name__} leaf"
                    )
                where = "" if i == 0 else f" under {_public_key(parts[:i])!r}"
                raise MissingKeyError(
                    f"Composite has no key {_public_key(parts)!r}: {part!r} is not "
                    f"present{where} (available: {list(node._specs)})"
                )
            node = child
        return node

    def __getitem__(self, key: NestedKey) -> TensorSpec:
        return self.get(key)

    def set(self, key: NestedKey, spec: TensorSpec | Mapping[str, Any]) -> Self:
        """Set the spec at ``key``, creating intermediate Composites for nested keys.

        Args:
            key: A string or a tuple of strings.
            spec: A spec, or a mapping turned into a ``Composite`` with this batch shape.

        Returns:
            ``self``, for chaining.

        Raises:
            SpecError: If the spec's shape does not start with the batch shape, it lives on
                another device than this composite, or a key on the path is a leaf spec.
        """
        self._set(_unravel(key), spec, move=False)
        return self

    def __setitem__(self, key: NestedKey, spec: TensorSpec | Mapping[str, Any]) -> None:
        self._set(_unravel(key), spec, move=False)

    def del_(self, key: NestedKey) -> Self:
        """Remove the entry at ``key``.

        Args:
            key: A string or a tuple of strings.

        Returns:
            ``self``, for chaining.

        Raises:
            KeyError: If ``key`` is absent.
        """
        parts = _unravel(key)
        parent = self.get(parts[:-1]) if len(parts) > 1 else self
        if not isinstance(parent, Composite) or parts[-1] not in parent._specs:
            raise MissingKeyError(f"cannot delete {_public_key(parts)!r}: no such key")
        del parent._specs[parts[-1]]
        return self

    def __delitem__(self, key: NestedKey) -> None:
        self.del_(key)

    def update(self, other: Composite | Mapping[NestedKey, Any]) -> Self:
        """Merge ``other`` in: nested Composites are merged recursively, leaves replaced.

        Nothing changes if an entry of ``other`` is rejected.

        Args:
            other: A Composite or a mapping of (nested) keys to specs or dicts.

        Returns:
            ``self``, for chaining.

        Raises:
            SpecError: If an entry is rejected (see :meth:`set`).
        """
        # Dry run on a copy of the tree structure (leaves shared) so a bad entry leaves self
        # untouched, then apply for real.
        self._structure_copy()._update(other)
        self._update(other)
        return self

    def _update(self, other: Composite | Mapping[NestedKey, Any]) -> None:
        if not isinstance(other, (Composite, Mapping)):
            raise SpecError(f"Composite.update expects a Composite or a dict, got {other!r}")
        items = other._specs.items() if isinstance(other, Composite) else other.items()
        for key, value in items:
            parts = _unravel(key)
            current = self.get(parts, None)
            if isinstance(current, Composite) and isinstance(value, (Composite, Mapping)):
                current._update(value)
            else:
                self._set(parts, value, move=False)

    def _structure_copy(self) -> Composite:
        children = {
            k: v._structure_copy() if isinstance(v, Composite) else v
            for k, v in self._specs.items()
        }
        return Composite._from_children(children, self._shape, self._device)

    def __contains__(self, key: object) -> bool:
        try:
            return self.get(key, None) is not None  # type: ignore[arg-type]
        except SpecError:
            return False

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._specs))

    def keys(self, include_nested: bool = False, leaves_only: bool = False) -> list[NestedKey]:
        """List the keys, depth first, parents before their children.

        Args:
            include_nested: Also list the keys inside nested Composites, as tuples.
            leaves_only: Leave out keys whose spec is a Composite.

        Returns:
            Strings for top-level keys and tuples for nested ones, like ``TensorDict.keys``.
        """
        return [k for k, _ in self._walk(include_nested, leaves_only)]

    def items(
        self, include_nested: bool = False, leaves_only: bool = False
    ) -> list[tuple[NestedKey, TensorSpec]]:
        """List ``(key, spec)`` pairs; the flags are those of :meth:`keys`."""
        return list(self._walk(include_nested, leaves_only))

    def values(self, include_nested: bool = False, leaves_only: bool = False) -> list[TensorSpec]:
        """List the specs; the flags are those of :meth:`keys`."""
        return [v for _, v in self._walk(include_nested, leaves_only)]

    def _walk(
        self, include_nested: bool, leaves_only: bool, prefix: tuple[str, ...] = ()
    ) -> Iterator[tuple[NestedKey, TensorSpec]]:
        for name, spec in self._specs.items():
            key = (*prefix, name)
            is_composite = isinstance(spec, Composite)
            if not (leaves_only and is_composite):
                yield _public_key(key), spec
            if include_nested and is_composite:
                yield from spec._walk(True, leaves_only, key)

    # ------------------------------------------------------------------ values
    def rand(self, shape: ShapeLike = ()) -> TensorDict:
        """Sample a random valid TensorDict of batch size ``[*shape, *self.shape]``.

        Args:
            shape: Leading batch dims.

        Returns:
            A ``TensorDict`` nested like this spec.
        """
        batch = as_size(shape, "batch shape")
        return self._build(batch, lambda spec: spec.rand(batch))

    def zero(self, shape: ShapeLike = ()) -> TensorDict:
        """Return a valid TensorDict of zero values of batch size ``[*shape, *self.shape]``.

        Args:
            shape: Leading batch dims.

        Returns:
            A ``TensorDict`` nested like this spec.
        """
        batch = as_size(shape, "batch shape")
        return self._build(batch, lambda spec: spec.zero(batch))

    def _build(self, batch: torch.Size, make: Callable[[TensorSpec], Any]) -> TensorDict:
        data = {name: make(spec) for name, spec in self._specs.items()}
        return TensorDict(data, batch_size=batch + self._shape, device=self._device)

    def is_in(self, x: Any) -> bool:
        """Whether every key of this spec is present in ``x`` with a valid value.

        Keys of ``x`` that the spec does not name are ignored.

        Args:
            x: A TensorDict (or a nested dict of tensors).

        Returns:
            ``True`` if all entries are valid, ``False`` otherwise (never raises).
        """
        if not isinstance(x, (TensorDictBase, Mapping)):
            return False
        for name, spec in self._specs.items():
            value = x.get(name, None)
            if value is None or not spec.is_in(value):
                return False
        return True

    def assert_is_in(self, x: Any, key: NestedKey | None = None) -> None:
        """Raise a :class:`SpecError` naming the first missing or invalid nested key.

        Args:
            x: A TensorDict (or a nested dict of tensors).
            key: The key ``x`` was read from, used as prefix of nested keys in messages.

        Raises:
            SpecError: If ``x`` is not a TensorDict, a key is missing or a value is invalid.
        """
        if self.is_in(x):
            return
        prefix = () if key is None else _unravel(key)
        if not isinstance(x, (TensorDictBase, Mapping)):
            raise SpecError(
                f"{fmt_key(key)} is not in {self._short_repr()}: expected a TensorDict, got "
                f"{type(x).__name__}"
            )
        for name, spec in self._specs.items():
            full = _public_key((*prefix, name))
            value = x.get(name, None)
            if value is None:
                where = f"at {_public_key(prefix)!r} " if prefix else ""
                raise SpecError(
                    f"key {full!r} is missing: the spec expects {spec._short_repr()}, the "
                    f"TensorDict {where}has keys {list(x.keys())}"
                )
            spec.assert_is_in(value, key=full)

    def project(self, x: Any) -> Any:
        """Project every entry named by the spec onto its valid values.

        Args:
            x: A TensorDict (or a nested dict of tensors) holding every key of the spec.

        Returns:
            A new TensorDict (dict for dict input) with projected entries; entries the spec
            does not name are passed through. The input is not modified.

        Raises:
            SpecError: If ``x`` is not a TensorDict/dict or lacks a key of the spec.
        """
        if not isinstance(x, (TensorDictBase, Mapping)):
            raise SpecError(
                f"cannot project onto {self._short_repr()}: expected a TensorDict, got "
                f"{type(x).__name__}"
            )
        out = x.copy() if isinstance(x, TensorDictBase) else dict(x)
        for name, spec in self._specs.items():
            value = x.get(name, None)
            if value is None:
                raise SpecError(
                    f"cannot project onto {self._short_repr()}: key {name!r} is missing"
                )
            out[name] = spec.project(value)
        return out

    # ------------------------------------------------------------------ new specs
    def expand(self, *shape: int | ShapeLike) -> Composite:
        """Return a Composite with batch shape ``shape``; children get the same new dims.

        Args:
            *shape: The new batch shape (ints or one tuple); it must end with ``self.shape``.

        Returns:
            A new Composite.

        Raises:
            SpecError: If the new shape does not end with ``self.shape``.
        """
        new_shape = resolve_expand_shape(self._shape, shape)
        lead = new_shape[: len(new_shape) - self.ndim]
        children = {k: v.expand(lead + v.shape) for k, v in self._specs.items()}
        return Composite._from_children(children, new_shape, self._device)

    def to(self, device: DeviceLike) -> Composite:
        """Return this spec with every child on ``device`` (``self`` if already there)."""
        device = as_device(device)
        if device == self._device:
            return self
        children = {k: v.to(device) for k, v in self._specs.items()}
        return Composite._from_children(children, self._shape, device)

    def clone(self) -> Composite:
        """Return an independent deep copy (equal to this spec)."""
        children = {k: v.clone() for k, v in self._specs.items()}
        return Composite._from_children(children, self._shape, self._device)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Composite)
        return (
            self._shape == other._shape
            and self._device == other._device
            and self._specs.keys() == other._specs.keys()
            and all(spec == other._specs[k] for k, spec in self._specs.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "\n".join(self._repr_lines(0))

    def _repr_lines(self, depth: int) -> list[str]:
        pad = "    " * (depth + 1)
        lines = ["Composite("]
        for name, spec in self._specs.items():
            if isinstance(spec, Composite):
                sub = spec._repr_lines(depth + 1)
                lines.append(f"{pad}{name}: {sub[0]}")
                lines.extend(sub[1:])
                lines[-1] += ","
            else:
                lines.append(f"{pad}{name}: {spec!r},")
        lines.append(f"{pad}shape={self._shape},")
        lines.append(f"{pad}device={self._device})")
        return lines

    def _short_repr(self) -> str:
        return f"Composite(keys={list(self._specs)}, shape={list(self._shape)})"

    # ------------------------------------------------------------------ helpers
    def _set(
        self, parts: tuple[str, ...], value: Any, move: bool, prefix: tuple[str, ...] = ()
    ) -> None:
        # Find the parent first; intermediates that would be created share its batch shape
        # and device, so the value can be checked before anything is stored.
        node: Composite = self
        depth = 0
        for part in parts[:-1]:
            child = node._specs.get(part)
            if child is None:
                break
            if not isinstance(child, Composite):
                raise SpecError(
                    f"cannot set {_public_key((*prefix, *parts))!r}: "
                    f"{_public_key((*prefix, *parts[: depth + 1]))!r} "
                    f"is a {type(child).__name__} leaf, not a Composite"
                )
            node = child
            depth += 1
        spec = node._checked_child((*prefix, *parts), value, move)
        for part in parts[depth:-1]:
            created = Composite(shape=node._shape, device=node._device)
            node._specs[part] = created
            node = created
        node._specs[parts[-1]] = spec

    def _checked_child(self, parts: tuple[str, ...], value: Any, move: bool) -> TensorSpec:
        """Validate ``value`` as a child of this composite (or of new intermediates).

        ``parts`` is the full key, used in error messages only.
        """
        key = _public_key(parts)
        if isinstance(value, Mapping) and not isinstance(value, TensorSpec):
            value = self._from_mapping(value, self._shape, self._device, parts, move)
        if not isinstance(value, TensorSpec):
            raise SpecError(
                f"Composite: value for key {key!r} must be a TensorSpec or a dict of specs, "
                f"got {type(value).__name__}"
            )
        n = self.ndim
        if value.shape[:n] != self._shape:
            raise SpecError(
                f"Composite: spec for key {key!r} has shape {list(value.shape)}, which does "
                f"not start with the Composite's batch shape {list(self._shape)}; fix: "
                f"spec.expand({', '.join(str(d) for d in (*self._shape, *value.shape))})"
            )
        if value.device != self._device:
            if move:
                value = value.to(self._device)
            else:
                raise SpecError(
                    f"Composite: spec for key {key!r} is on {value.device} but the Composite "
                    f"is on {self._device}; fix: spec.to({str(self._device)!r})"
                )
        return value
