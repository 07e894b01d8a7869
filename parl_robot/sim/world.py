"""The MuJoCo world of one task: inverse kinematics, command execution, grasping, rendering."""

from __future__ import annotations

import mujoco
import numpy as np

from parl_robot.config import SimConfig
from parl_robot.robot.safety import EECommand, rotation_error
from parl_robot.sim.scenes import DISTRACTOR_PARKING_XY, SCENE_OBJECTS, scene_mjcf
from parl_robot.sim.widowx_model import GRIPPER_SITE, JOINT_LIMITS_RAD, JOINT_NAMES, JOINT_VELOCITY_LIMIT

FINGER_OPEN = 0.0
FINGER_CLOSED = 0.022
GRASP_RADIUS_M = 0.03  # object centre within this xy-distance of the gripper centre ...
GRASP_HEIGHT_TOLERANCE_M = 0.035  # ... and this far in z, when the gripper closes


class SimWorld:
    def __init__(self, task: str, sim: SimConfig):
        self.task = task
        self.sim_config = sim
        self.model = mujoco.MjModel.from_xml_string(scene_mjcf(task, sim.physics_dt))
        self.data = mujoco.MjData(self.model)
        self._ik_data = mujoco.MjData(self.model)
        self.site_id = self.model.site(GRIPPER_SITE).id
        self.arm_qpos = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self.arm_dofs = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self.left_finger = self.model.joint("left_finger").qposadr[0]
        self.right_finger = self.model.joint("right_finger").qposadr[0]
        self.objects = SCENE_OBJECTS[task]
        self.object_qpos = {o.name: self.model.joint(f"{o.name}_joint").qposadr[0] for o in self.objects}
        self.object_dof = {o.name: self.model.joint(f"{o.name}_joint").dofadr[0] for o in self.objects}
        self.gripper_open = True
        self.grasped: str | None = None
        self._grasp_offset = np.zeros(3)
        self._grasp_rotation = np.eye(3)
        self._renderer: mujoco.Renderer | None = None
        # The last frame and the scene state it shows: a still scene (pre-training, resets waiting
        # for the operator, labelling) is not rendered again at the camera rate.
        self._frame_key: tuple | None = None
        self._frame: np.ndarray | None = None

    # ----- state -----------------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.arm_qpos].copy()

    def finger_positions(self) -> np.ndarray:
        return np.array([self.data.qpos[self.left_finger], self.data.qpos[self.right_finger]])

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def object_position(self, name: str) -> np.ndarray:
        adr = self.object_qpos[name]
        return self.data.qpos[adr : adr + 3].copy()

    def object_positions(self) -> dict[str, np.ndarray]:
        return {o.name: self.object_position(o.name) for o in self.objects}

    # ----- kinematics ------------------------------------------------------------------------
    def solve_ik(
        self, position: np.ndarray, rotation: np.ndarray, seed: np.ndarray | None = None, iterations: int = 60
    ) -> tuple[np.ndarray, float]:
        """Damped least squares on the 6 arm joints; returns (joints, position error in metres)."""
        data = self._ik_data
        data.qpos[:] = self.data.qpos
        q = (self.joint_positions() if seed is None else np.asarray(seed, float)).copy()
        jac_pos = np.zeros((3, self.model.nv))
        jac_rot = np.zeros((3, self.model.nv))
        damping = 1e-4
        rotation_weight = 0.3
        position_error = np.inf
        for _ in range(iterations):
            data.qpos[self.arm_qpos] = q
            mujoco.mj_kinematics(self.model, data)
            current_pos = data.site_xpos[self.site_id]
            current_rot = data.site_xmat[self.site_id].reshape(3, 3)
            err_pos = position - current_pos
            err_rot = rotation_error(rotation, current_rot)
            position_error = float(np.linalg.norm(err_pos))
            if position_error < 1e-4 and np.linalg.norm(err_rot) < 1e-3:
                break
            mujoco.mj_comPos(self.model, data)
            mujoco.mj_jacSite(self.model, data, jac_pos, jac_rot, self.site_id)
            jac = np.vstack([jac_pos[:, self.arm_dofs], rotation_weight * jac_rot[:, self.arm_dofs]])  # (6, 6)
            err = np.concatenate([err_pos, rotation_weight * err_rot])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(6), err)
            q = np.clip(q + dq, JOINT_LIMITS_RAD[:, 0], JOINT_LIMITS_RAD[:, 1])
        return q, position_error

    # ----- commands --------------------------------------------------------------------------
    def set_arm(self, joints: np.ndarray, gripper_open: bool) -> None:
        self.data.qpos[self.arm_qpos] = joints
        finger = FINGER_OPEN if gripper_open else FINGER_CLOSED
        self.data.qpos[self.left_finger] = -finger
        self.data.qpos[self.right_finger] = finger
        self.gripper_open = gripper_open
        mujoco.mj_forward(self.model, self.data)

    def execute(self, command: EECommand, duration: float) -> float:
        """Move towards `command` for `duration` seconds of sim time; returns the IK position error."""
        start = self.joint_positions()
        target, ik_error = self.solve_ik(command.position, command.rotation, seed=start)
        max_delta = JOINT_VELOCITY_LIMIT * duration
        target = start + np.clip(target - start, -max_delta, max_delta)
        if command.gripper_open and self.grasped is not None:
            self.grasped = None
        self.gripper_open = command.gripper_open
        substeps = max(1, int(round(duration / self.model.opt.timestep)))
        finger = FINGER_OPEN if command.gripper_open else FINGER_CLOSED
        start_finger = self.data.qpos[self.right_finger]
        for i in range(substeps):
            # The arm reaches the target in the first 60 % of the period (a trapezoid-like profile).
            fraction = min(1.0, (i + 1) / (0.6 * substeps))
            self.data.qpos[self.arm_qpos] = start + fraction * (target - start)
            self.data.qvel[self.arm_dofs] = 0.0
            finger_now = start_finger + min(1.0, (i + 1) / (0.3 * substeps)) * (finger - start_finger)
            self.data.qpos[self.left_finger] = -finger_now
            self.data.qpos[self.right_finger] = finger_now
            if not command.gripper_open and self.grasped is None and i == int(0.3 * substeps):
                self._try_grasp()
            mujoco.mj_step(self.model, self.data)
            if self.grasped is not None:
                self._carry_grasped()
        mujoco.mj_forward(self.model, self.data)
        return ik_error

    def _try_grasp(self) -> None:
        mujoco.mj_kinematics(self.model, self.data)
        ee_pos, ee_rot = self.ee_pose()
        for obj in self.objects:
            offset = self.object_position(obj.name) - ee_pos
            if np.linalg.norm(offset[:2]) < GRASP_RADIUS_M and abs(offset[2]) < GRASP_HEIGHT_TOLERANCE_M:
                adr = self.object_qpos[obj.name]
                object_rot = np.zeros(9)
                mujoco.mju_quat2Mat(object_rot, self.data.qpos[adr + 3 : adr + 7])
                self.grasped = obj.name
                self._grasp_offset = ee_rot.T @ offset
                self._grasp_rotation = ee_rot.T @ object_rot.reshape(3, 3)
                return

    def _carry_grasped(self) -> None:
        mujoco.mj_kinematics(self.model, self.data)
        ee_pos, ee_rot = self.ee_pose()
        adr = self.object_qpos[self.grasped]
        dof = self.object_dof[self.grasped]
        self.data.qpos[adr : adr + 3] = ee_pos + ee_rot @ self._grasp_offset
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, (ee_rot @ self._grasp_rotation).reshape(-1))
        self.data.qpos[adr + 3 : adr + 7] = quat
        self.data.qvel[dof : dof + 6] = 0.0

    # ----- reset -----------------------------------------------------------------------------
    def reset(
        self,
        rng: np.random.Generator,
        home_position: np.ndarray,
        home_rotation: np.ndarray,
        distractors: bool = True,
    ) -> None:
        """Re-randomize the task object (and distractors, or park them out of view) and home the arm."""
        mujoco.mj_resetData(self.model, self.data)
        self.grasped = None
        placed: list[np.ndarray] = []
        for i, obj in enumerate(self.objects):
            if i > 0 and not distractors:
                adr = self.object_qpos[obj.name]
                parking = DISTRACTOR_PARKING_XY + np.array([0.0, 0.1 * i])
                self.data.qpos[adr : adr + 3] = [parking[0], parking[1], obj.half_height + 0.002]
                self.data.qpos[adr + 3 : adr + 7] = [1.0, 0.0, 0.0, 0.0]
                continue
            for _ in range(100):
                if i == 0:
                    xy = rng.uniform(self.sim_config.object_xy_low, self.sim_config.object_xy_high)
                else:  # distractors: anywhere on the near table, away from other objects
                    xy = rng.uniform([0.2, -0.2], [0.4, 0.2])
                if all(np.linalg.norm(xy - p) > 0.08 for p in placed):
                    break
            placed.append(xy)
            yaw = rng.uniform(-self.sim_config.object_yaw_range, self.sim_config.object_yaw_range) / 2
            adr = self.object_qpos[obj.name]
            self.data.qpos[adr : adr + 3] = [xy[0], xy[1], obj.half_height + 0.002]
            self.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw), 0.0, 0.0, np.sin(yaw)]
        joints, _ = self.solve_ik(home_position, home_rotation, seed=np.array([0.0, -0.3, 0.3, 0.0, 1.5, 0.0]))
        for _ in range(50):  # let objects settle; the arm is kinematic and held at its joints
            self.set_arm(joints, gripper_open=True)
            mujoco.mj_step(self.model, self.data)
        self.set_arm(joints, gripper_open=True)

    # ----- rendering -------------------------------------------------------------------------
    def render(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB image (height, width, 3) uint8 from the fixed third-person camera. The picture is a
        function of the joint positions (every command and reset ends with `mj_forward`, so the
        bodies' poses follow them): while they are unchanged the last frame is returned again (a
        copy) instead of being rendered again (~70 ms on one CPU core with llvmpipe)."""
        width = width or self.sim_config.camera_width
        height = height or self.sim_config.camera_height
        key = (width, height, self.data.qpos.tobytes())
        if key != self._frame_key:
            if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
                self._renderer = mujoco.Renderer(self.model, height, width)
            self._renderer.update_scene(self.data, camera="third_person")
            self._frame, self._frame_key = self._renderer.render().copy(), key
        return self._frame.copy()

    def camera_model(self, width: int | None = None, height: int | None = None):
        """The third-person camera as a calibrated `CameraModel` (exact: read from the MuJoCo model),
        so the hardware perception code can be tested on rendered frames with known object poses."""
        from parl_robot.perception.calibration import CameraModel

        width = width or self.sim_config.camera_width
        height = height or self.sim_config.camera_height
        camera = self.model.camera("third_person")
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        position = self.data.cam_xpos[camera.id].copy()
        axes = self.data.cam_xmat[camera.id].reshape(3, 3)  # columns: camera x (right), y (up), z (backward)
        focal = (height / 2) / np.tan(np.deg2rad(self.model.cam_fovy[camera.id]) / 2)
        camera_matrix = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
        rotation = np.stack([axes[:, 0], -axes[:, 1], -axes[:, 2]])  # OpenCV: x right, y down, z forward
        return CameraModel(camera_matrix, np.zeros(5), width, height, rotation, -rotation @ position, 0.0)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

