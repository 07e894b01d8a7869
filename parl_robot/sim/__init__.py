"""MuJoCo twin of the WidowX-250 kitchen setup.

MuJoCo picks its OpenGL backend when it is first imported; offscreen EGL is the default here so
rendering works on headless machines (override with MUJOCO_GL=osmesa/glfw).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
