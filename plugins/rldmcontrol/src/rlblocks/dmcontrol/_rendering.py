"""Headless OpenGL for MuJoCo's pixels: which backend, and when it is chosen.

dm_control picks its OpenGL backend once, when ``dm_control._render`` is first imported,
from the ``MUJOCO_GL`` environment variable (GLFW, then EGL, then OSMesa when it is unset).
GLFW needs a display, so on a headless machine the automatic choice fails to render. Only
envs that render pixels need a backend, and a wrong ``MUJOCO_GL`` breaks even physics-only
imports, so rlblocks sets it only when pixels are asked for, nobody chose one, no display
is available, and dm_control has not chosen yet.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

from rlblocks.dmcontrol.errors import RenderingError

__all__ = ["MUJOCO_GL", "choose_gl_backend", "active_gl_backend", "rendering_error"]

MUJOCO_GL = "MUJOCO_GL"
# (MUJOCO_GL value, the shared library it loads), in order of preference: EGL also runs
# without a GPU through Mesa's software driver; OSMesa is the slow software fallback.
_HEADLESS = (("egl", "EGL"), ("osmesa", "OSMesa"))
_FIX = (
    "Fix: on a headless Linux machine install an OpenGL library (Debian/Ubuntu: "
    "apt-get install libegl1 for MUJOCO_GL=egl, or libosmesa6 for MUJOCO_GL=osmesa) and set "
    "MUJOCO_GL before dm_control is first imported in the process; or use from_pixels=False."
)


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def choose_gl_backend() -> str | None:
    """Set ``MUJOCO_GL`` to a headless backend where that is needed and still possible.

    Call it before importing dm_control for an env that renders pixels.

    Returns:
        The backend it set (``"egl"`` or ``"osmesa"``), or ``None`` when it left things as
        they were: ``MUJOCO_GL`` is already set, dm_control already chose its backend, a
        display is available (GLFW works), or no headless OpenGL library is installed.
    """
    if os.environ.get(MUJOCO_GL) or "dm_control._render" in sys.modules or _has_display():
        return None
    for backend, library in _HEADLESS:
        if ctypes.util.find_library(library):
            os.environ[MUJOCO_GL] = backend
            return backend
    return None


def active_gl_backend() -> str | None:
    """The OpenGL backend dm_control chose in this process (``None`` before it chose)."""
    module = sys.modules.get("dm_control._render")
    return getattr(module, "BACKEND", None)


def rendering_error(who: str, exc: BaseException) -> RenderingError:
    """The error raised when rendering a first frame (or importing the renderer) failed."""
    return RenderingError(
        f"{who}(from_pixels=True) cannot render with MuJoCo: {type(exc).__name__}: {exc}. "
        f"OpenGL backend in use: {active_gl_backend()!r}, MUJOCO_GL="
        f"{os.environ.get(MUJOCO_GL)!r}. {_FIX}"
    )
