"""The shared exception hierarchy."""

from __future__ import annotations

import pytest

from rlblocks.core import errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.SpecError, ValueError),
        (errors.UnknownComponentError, LookupError),
        (errors.MissingDependencyError, ImportError),
        (errors.MissingKeyError, KeyError),
        (errors.PluginConflictError, errors.PluginError),
    ],
)
def test_every_error_is_an_rlblocks_error_and_its_builtin(cls, builtin):
    assert issubclass(cls, errors.RLBlocksError)
    assert issubclass(cls, builtin)


def test_missing_dependency_names_the_pip_fix():
    error = errors.missing_dependency(
        "TensorBoardLogger", "tensorboard", "rlblocks-core[tensorboard]"
    )
    assert isinstance(error, ImportError)
    assert "TensorBoardLogger" in str(error) and "'tensorboard'" in str(error)
    assert "pip install 'rlblocks-core[tensorboard]'" in str(error)
