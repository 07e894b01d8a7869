"""MJCF of the WidowX-250 6-DoF (wx250s) built from Trossen's published kinematics.

Joint placement comes from the space-frame screw axes of the wx250s (see ANCHOR_FACTS):
waist about z at the base, shoulder about y at z=0.11065, elbow about y at (0.04975, 0, 0.36065),
forearm roll about x at z=0.36065, wrist angle about y at x=0.29975, wrist rotate about x, and the
gripper centre at the home pose M = (0.458325, 0, 0.36065). Links are primitive geoms.

The arm is moved kinematically (joint targets interpolated under the π rad/s velocity limit) and
does not collide; objects are free bodies with contacts against the table and fixtures. A grasp is
a kinematic attachment made when the gripper closes with an object between the fingers.
"""

from __future__ import annotations

import numpy as np

from parl_robot.robot.widowx import (  # noqa: F401  (re-exported for the sim)
    HOME_EE_POSITION, JOINT_LIMITS_RAD, JOINT_NAMES, JOINT_VELOCITY_LIMIT, SLEEP_JOINTS,
)

GRIPPER_SITE = "ee_site"


def look_at_xyaxes(position: np.ndarray, target: np.ndarray) -> str:
    """MuJoCo camera `xyaxes` for a camera at `position` looking at `target` (z up)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.5f}" for v in (*right, *up))


def arm_mjcf() -> str:
    """The arm's kinematic tree as an MJCF <body> fragment rooted at the robot base."""
    limits = [f"{lo:.4f} {hi:.4f}" for lo, hi in JOINT_LIMITS_RAD]
    link = 'rgba="0.15 0.15 0.15 1" contype="0" conaffinity="0"'
    accent = 'rgba="0.8 0.35 0.1 1" contype="0" conaffinity="0"'
    return f"""
    <body name="base_link" pos="0 0 0">
      <geom type="box" size="0.07 0.07 0.036" pos="0 0 0.036" {link}/>
      <body name="shoulder_link" pos="0 0 0.072">
        <joint name="waist" type="hinge" axis="0 0 1" range="{limits[0]}" limited="true"/>
        <geom type="cylinder" size="0.04 0.02" pos="0 0 0.02" {accent}/>
        <body name="upper_arm_link" pos="0 0 0.03865">
          <joint name="shoulder" type="hinge" axis="0 1 0" range="{limits[1]}" limited="true"/>
          <geom type="capsule" fromto="0 0 0 0.04975 0 0.25" size="0.022" {link}/>
          <body name="upper_forearm_link" pos="0.04975 0 0.25">
            <joint name="elbow" type="hinge" axis="0 1 0" range="{limits[2]}" limited="true"/>
            <geom type="capsule" fromto="0 0 0 0.125 0 0" size="0.02" {link}/>
            <body name="lower_forearm_link" pos="0.125 0 0">
              <joint name="forearm_roll" type="hinge" axis="1 0 0" range="{limits[3]}" limited="true"/>
              <geom type="capsule" fromto="0 0 0 0.125 0 0" size="0.018" {accent}/>
              <body name="wrist_link" pos="0.125 0 0">
                <joint name="wrist_angle" type="hinge" axis="0 1 0" range="{limits[4]}" limited="true"/>
                <geom type="capsule" fromto="0 0 0 0.065 0 0" size="0.017" {link}/>
                <body name="gripper_link" pos="0.065 0 0">
                  <joint name="wrist_rotate" type="hinge" axis="1 0 0" range="{limits[5]}" limited="true"/>
                  <geom type="box" size="0.02 0.035 0.015" pos="0.02 0 0" {link}/>
                  <site name="{GRIPPER_SITE}" pos="0.093575 0 0" size="0.006" rgba="1 0 0 0.6"/>
                  <body name="left_finger" pos="0.07 0.03 0">
                    <joint name="left_finger" type="slide" axis="0 1 0" range="-0.022 0" limited="true"/>
                    <geom type="box" size="0.03 0.004 0.012" pos="0.01 0 0" {accent}/>
                  </body>
                  <body name="right_finger" pos="0.07 -0.03 0">
                    <joint name="right_finger" type="slide" axis="0 1 0" range="0 0.022" limited="true"/>
                    <geom type="box" size="0.03 0.004 0.012" pos="0.01 0 0" {accent}/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""
