"""MuJoCo sim bridge: stands in for the camera and the arm with the same topics and services.

It is the control node with the sim backend, plus the sim camera (`camera/image_raw`, rgb8) and
ground-truth object positions (`objects/poses`, JSON {name: [x, y, z]} plus `_meta`: never
occluded, age 0) that the real setup gets from its perception. `sim/reset` re-randomizes the scene (the sim's automatic reset).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from parl_robot.nodes import common
from parl_robot.nodes.control_node import ControlNode
from parl_robot.perception.object_poses import ObjectPoses, encode_object_poses
from parl_robot.robot.backend import SimArmBackend
from parl_robot.robot.safety import DOWNWARD_ROTATION
from parl_robot.sim.lockstep import LockstepClock
from parl_robot.sim.scenes import distractors_active
from parl_robot.sim.world import SimWorld


class SimBridgeNode(ControlNode):
    def __init__(self):
        self.objects_pub = None
        super().__init__("sim_bridge")
        # Several sim arms (arms:=N): arm k draws its own resets (seed sim.seed + k), not the same scenes.
        self.rng = np.random.default_rng(self.cfg.sim.seed + int(self.declare_parameter("seed_offset", 0).value))
        self.publish_camera = self.declare_parameter("publish_camera", True).value
        # `camera_connected:=false` (settable while running, e.g. `ros2 param set`) simulates a camera
        # that drops out: no images and, as on hardware where poses come from the camera, no object poses.
        self.declare_parameter("camera_connected", True)
        self.image_pub = self.create_publisher(Image, common.CAMERA_IMAGE, common.SENSOR_QOS)
        self.objects_pub = self.create_publisher(String, common.OBJECT_POSES, common.SENSOR_QOS)
        # Everything that touches the MuJoCo world runs in the control node's acting group: the
        # executor is multi-threaded, and rendering or resetting during a physics step is not safe.
        self.create_service(Trigger, common.SRV_SIM_RESET, self.on_reset, callback_group=self.acting_group)
        # The learner's phase decides whether distractors are out (`sim.distractors: online`).
        self.learner_phase = "offline"
        self.create_subscription(String, common.LEARNER_STATS, self.on_learner_stats, common.EVENT_QOS)
        self.create_timer(1.0 / self.cfg.sim.camera_rate_hz, self.on_camera_tick, callback_group=self.acting_group)
        self.lockstep: LockstepClock | None = None
        if self.declare_parameter("lockstep", False).value:
            self._start_lockstep()
        self.reset_scene()

    def _start_lockstep(self) -> None:
        """Drive ROS time (`/clock`) from a thread: one control period per handled action while an
        episode runs (parl_robot/sim/lockstep.py); every node of the graph runs with `use_sim_time`."""
        if not common.uses_sim_time(self):
            raise ValueError("lockstep:=true needs use_sim_time:=true on every node (the launchers set both)")
        self.lockstep = LockstepClock(self.controller.period, steps_per_episode=self.cfg.control.max_episode_steps)
        self.clock_pub = self.create_publisher(Clock, "/clock", common.CLOCK_QOS)
        self.create_subscription(String, common.EPISODE_STATE, self.on_episode_state, common.LATCHED_QOS,
                                 callback_group=self.acting_group)
        self.create_subscription(String, common.LEARNER_ACTING, self.on_learner_acting, common.COMMAND_QOS)
        self._publish_clock(self.lockstep.now_s)
        self._clock_running = True
        self._clock_thread = threading.Thread(target=self._drive_clock, name="lockstep-clock", daemon=True)
        self._clock_thread.start()

    def _publish_clock(self, seconds: float) -> None:
        message = Clock()
        message.clock.sec, message.clock.nanosec = int(seconds), int(round((seconds % 1) * 1e9)) % 1_000_000_000
        self.clock_pub.publish(message)

    def _drive_clock(self) -> None:
        published = checked = 0.0
        while self._clock_running:
            if self.lockstep.computing and time.monotonic() - checked >= 0.5:
                checked = time.monotonic()  # a learner that died mid-step must not freeze time
                if self.count_publishers(common.ROBOT_ACTION) == 0:
                    self.get_logger().warning("the learner left while computing an action: time runs on")
                    self.lockstep.producer_lost()
            # Between episodes time runs at wall speed: 50 updates/s are plenty (and cheap over DDS).
            if self.lockstep.stepping or time.monotonic() - published >= 0.02:
                stalls = self.lockstep.stalls
                now = self.lockstep.advance()
                if self.lockstep.stalls != stalls:
                    self.get_logger().info(
                        f"lockstep: no action for step {self.lockstep.awaited_step} and none announced for "
                        f"{self.lockstep.stall_timeout_s:.0f} s: time runs at wall speed until the next one")
                if now is not None:
                    self._publish_clock(now)
                    published = time.monotonic()
            time.sleep(0.005)

    def on_episode_state(self, msg: String) -> None:
        report = common.parse_json_object(msg) or {}
        state, episode = report.get("state"), report.get("episode")
        if isinstance(state, str):
            running, starting = state == "running", state == "running" and not self.lockstep.stepping
            self.lockstep.set_stepping(running, episode if isinstance(episode, int) else None, first_step_now=False)
            if starting:
                # Time stands still; fresh observations stamped now (between episodes the camera timer may
                # lag on a loaded machine, and the learner never acts on stale ones), then the first step.
                self.on_camera_tick()
                self.lockstep.first_step()

    def on_learner_acting(self, msg: String) -> None:
        report = common.parse_json_object(msg) or {}
        step, episode = report.get("step"), report.get("episode")
        if isinstance(step, int) and isinstance(episode, int):
            self.lockstep.announce(step, episode)

    def on_action(self, msg) -> None:
        super().on_action(msg)
        if self.lockstep is not None:
            self.lockstep.step_done(int(msg.layout.data_offset))  # executed or refused: this step's time may pass

    def _make_backend(self, name: str, robot_model: str, moving_time: float, accel_time: float) -> SimArmBackend:
        self.world = SimWorld(self.cfg.task.name, self.cfg.sim)
        return SimArmBackend(self.world, moving_time=moving_time)

    def on_learner_stats(self, msg: String) -> None:
        phase = (common.parse_json_object(msg) or {}).get("phase")
        if isinstance(phase, str):
            self.learner_phase = phase

    def reset_scene(self) -> None:
        distractors = distractors_active(self.cfg.sim.distractors, self.learner_phase)
        self.world.reset(self.rng, self.controller.home_position, DOWNWARD_ROTATION, distractors=distractors)
        self.controller.go_home()
        self.after_command()

    def on_reset(self, request, response):
        if self.controller.status.held_reasons:
            response.success, response.message = False, f"held: {', '.join(self.controller.status.held_reasons)}"
            return response
        self.reset_scene()
        response.success, response.message = True, "scene randomized"
        return response

    def after_command(self) -> None:
        super().after_command()
        self.publish_objects()

    def camera_connected(self) -> bool:
        return bool(self.get_parameter("camera_connected").value)

    def camera_ok(self) -> bool:
        return self.camera_connected()

    def publish_objects(self) -> None:
        if self.objects_pub is None or not self.camera_connected():  # inside ControlNode.__init__, or dropped
            return
        positions = {name: position.round(5).tolist() for name, position in self.world.object_positions().items()}
        poses = ObjectPoses(positions, dict.fromkeys(positions, False), dict.fromkeys(positions, 0.0),
                            self.get_clock().now().nanoseconds * 1e-9)
        self.objects_pub.publish(String(data=encode_object_poses(poses)))

    def on_camera_tick(self) -> None:
        self.publish_objects()
        if not self.publish_camera or not self.camera_connected():
            return
        frame = self.world.render()
        self.image_pub.publish(common.rgb_image_message(frame, self.get_clock().now().to_msg()))

    def close(self) -> None:
        if self.lockstep is not None:
            self._clock_running = False
            self._clock_thread.join(timeout=1.0)
        self.world.close()


def main(args=None) -> int:
    return common.run_node(SimBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
