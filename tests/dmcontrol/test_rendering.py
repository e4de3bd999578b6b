"""Pixels: MuJoCo renders headless, and MUJOCO_GL is chosen only when pixels are asked for.

dm_control picks its OpenGL backend once per process, at import, so each case runs in a
fresh interpreter with no display and the environment variables the case needs.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

HEADLESS_GL = ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa")


def run_headless(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")
    }
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300
    )


def test_physics_only_envs_leave_mujoco_gl_alone():
    result = run_headless(
        "import os\n"
        "from rlblocks.dmcontrol import DMControlEnv\n"
        "env = DMControlEnv('cartpole', 'swingup')\n"
        "assert env.rollout(20).batch_size == (20,)\n"
        "print('MUJOCO_GL', os.environ.get('MUJOCO_GL'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert "MUJOCO_GL None" in result.stdout


@pytest.mark.skipif(not HEADLESS_GL, reason="no headless OpenGL library (libEGL, libOSMesa)")
def test_pixels_render_headless_with_a_chosen_backend():
    result = run_headless(
        "import os, torch\n"
        "from rlblocks.dmcontrol import DMControlEnv\n"
        "from rlblocks.envs import check_env_specs\n"
        "env = DMControlEnv('cartpole', 'swingup', from_pixels=True, height=48, width=64)\n"
        "spec = env.full_observation_spec['pixels']\n"
        "assert spec.shape == (48, 64, 3) and spec.dtype == torch.uint8, spec\n"
        "check_env_specs(env, steps=3, seed=0)\n"
        "env.set_seed(0)\n"
        "traj = env.rollout(15, policy=lambda td: td.set('action', torch.ones(1).double()))\n"
        "px = traj['next', 'pixels']\n"
        "assert px.shape == (15, 48, 64, 3) and px.dtype == torch.uint8\n"
        "assert px.float().std() > 5, 'a blank frame'\n"
        "assert not torch.equal(px[0], px[-1]), 'the cart moves, so must the picture'\n"
        "env.set_seed(0)\n"
        "assert torch.equal(env.reset()['pixels'], traj['pixels'][0]), 'seeded frames repeat'\n"
        "only = DMControlEnv('cartpole', 'swingup', from_pixels=True, pixels_only=True)\n"
        "assert sorted(only.observation_keys) == ['discount', 'pixels']\n"
        "print('MUJOCO_GL', os.environ.get('MUJOCO_GL'))\n"
    )
    assert result.returncode == 0, result.stderr
    assert ("MUJOCO_GL egl" in result.stdout) or ("MUJOCO_GL osmesa" in result.stdout)


def test_a_backend_that_cannot_render_fails_at_construction_with_the_fix():
    # "disabled" is dm_control's own no-rendering mode: the first frame cannot be drawn.
    result = run_headless(
        "from rlblocks.dmcontrol import DMControlEnv, RenderingError\n"
        "try:\n"
        "    DMControlEnv('cartpole', 'swingup', from_pixels=True)\n"
        "except RenderingError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no RenderingError')\n"
        "env = DMControlEnv('cartpole', 'swingup')\n"
        "assert env.rollout(3).batch_size == (3,), 'physics still works'\n",
        MUJOCO_GL="disabled",
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "DMControlEnv(from_pixels=True) cannot render" in message
    assert "MUJOCO_GL='disabled'" in message
    assert "libegl1" in message and "from_pixels=False" in message
