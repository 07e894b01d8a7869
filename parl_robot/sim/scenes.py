"""Kitchen-sink scenes for the paper's three WidowX tasks, as MJCF strings.

Each scene has the arm on a table, a sink basin and the task's objects. The movable object is a
free body named after the task's `reward.object_name`; fixtures (rack, plate) sit in the target
region that `config/tasks/<task>.yaml` declares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parl_robot.sim.widowx_model import arm_mjcf, look_at_xyaxes


@dataclass(frozen=True)
class MovableObject:
    name: str
    geom: str  # MJCF geom attributes (type, size, rgba)
    half_height: float  # resting height of the body centre above the surface
    grasp_height: float  # gripper-centre height above the surface for a grasp


SCENE_OBJECTS: dict[str, tuple[MovableObject, ...]] = {
    "cup_to_rack": (
        MovableObject("cup", 'type="cylinder" size="0.028 0.04" rgba="0.2 0.5 0.9 1"', 0.04, 0.045),
    ),
    "pot_to_sink": (
        MovableObject("pot", 'type="cylinder" size="0.045 0.03" rgba="0.6 0.6 0.62 1"', 0.03, 0.035),
        MovableObject("sponge", 'type="box" size="0.025 0.015 0.01" rgba="0.95 0.85 0.2 1"', 0.01, 0.012),
    ),
    "vegetable_to_sink": (
        MovableObject("vegetable", 'type="capsule" size="0.018 0.03" euler="0 90 0" rgba="0.9 0.45 0.1 1"', 0.018, 0.02),
        MovableObject("spoon", 'type="box" size="0.04 0.008 0.005" rgba="0.8 0.8 0.85 1"', 0.005, 0.008),
    ),
}

# Fixture geoms per task: (name, geom attributes, centre xyz).
SCENE_FIXTURES: dict[str, tuple[tuple[str, str, tuple[float, float, float]], ...]] = {
    "cup_to_rack": (
        ("sink", 'type="box" size="0.09 0.09 0.002" rgba="0.55 0.6 0.65 1"', (0.30, -0.10, 0.002)),
        ("rack", 'type="box" size="0.06 0.06 0.01" rgba="0.4 0.25 0.15 1"', (0.31, 0.11, 0.01)),
    ),
    "pot_to_sink": (
        ("sink", 'type="box" size="0.09 0.09 0.002" rgba="0.55 0.6 0.65 1"', (0.30, 0.11, 0.002)),
    ),
    "vegetable_to_sink": (
        ("sink", 'type="box" size="0.09 0.09 0.002" rgba="0.55 0.6 0.65 1"', (0.30, 0.0, 0.002)),
        ("plate", 'type="cylinder" size="0.05 0.005" rgba="0.95 0.95 0.95 1"', (0.31, 0.11, 0.005)),
    ),
}

# Where a switched-off distractor waits: on the table, out of the arm's reach and outside the
# camera's view (behind and beside the camera), so it neither shows in images nor blocks a grasp.
DISTRACTOR_PARKING_XY = np.array([0.78, -0.75])

CAMERA_POSITION = np.array([0.85, -0.35, 0.55])
CAMERA_TARGET = np.array([0.30, 0.0, 0.05])


def distractors_active(mode: str, phase: str) -> bool:
    """Whether distractors are on the table for an episode of `phase` ("demo", "offline_eval",
    "warmup" or "online") under `sim.distractors` = "always" | "never" | "online"."""
    if mode not in ("always", "never", "online"):
        raise ValueError(f"sim.distractors must be always, never or online, got {mode!r}")
    return mode == "always" or (mode == "online" and phase == "online")


def scene_mjcf(task: str, physics_dt: float) -> str:
    if task not in SCENE_OBJECTS:
        raise ValueError(f"no sim scene for task '{task}' (known: {sorted(SCENE_OBJECTS)})")
    fixtures = "\n".join(
        f'    <geom name="{name}" {geom} pos="{x} {y} {z}" contype="1" conaffinity="1"/>'
        for name, geom, (x, y, z) in SCENE_FIXTURES[task]
    )
    objects = "\n".join(
        f'    <body name="{obj.name}" pos="0.3 {-0.3 - 0.1 * i} {obj.half_height}">\n'
        f'      <freejoint name="{obj.name}_joint"/>\n'
        f'      <geom name="{obj.name}_geom" {obj.geom} mass="0.05" friction="1 0.01 0.001" '
        f'contype="1" conaffinity="1" condim="4"/>\n'
        f"    </body>"
        for i, obj in enumerate(SCENE_OBJECTS[task])
    )
    xyaxes = look_at_xyaxes(CAMERA_POSITION, CAMERA_TARGET)
    return f"""<mujoco model="widowx250_{task}">
  <option timestep="{physics_dt}" gravity="0 0 -9.81"/>
  <visual><global offwidth="1024" offheight="1024"/></visual>
  <worldbody>
    <light pos="0.3 0 1.2" dir="0 0 -1" diffuse="0.8 0.8 0.8"/>
    <light pos="0.8 -0.6 0.9" dir="-0.5 0.5 -0.6" diffuse="0.4 0.4 0.4"/>
    <geom name="table" type="plane" size="0.8 0.8 0.05" rgba="0.85 0.82 0.75 1" contype="1" conaffinity="1"/>
    <camera name="third_person" pos="{' '.join(map(str, CAMERA_POSITION))}" xyaxes="{xyaxes}" fovy="50"/>
{fixtures}
{objects}
{arm_mjcf()}
  </worldbody>
</mujoco>"""
