"""Topic and service names of the node graph, relative to the namespace (docs/topics.md).

No ROS import here: the launchers, the CLI and the tools name topics without rclpy installed.
`parl_robot.nodes.common` re-exports them beside the QoS profiles the nodes use.
"""

NAMESPACE = "parl"

CAMERA_IMAGE = "camera/image_raw"
CAMERA_STATUS = "camera/status"  # JSON at 1 Hz: fps, age_s of the newest frame, identical frames, connected
ROBOT_STATE = "robot/state"
ROBOT_EE_POSE = "robot/ee_pose"
ROBOT_ACTION = "robot/action"
ROBOT_STATUS = "robot/status"
ROBOT_SAFETY = "robot/safety"  # JSON: state ok/held, reasons, fault, since (latched, transient-local)
OBJECT_POSES = "objects/poses"
REWARD = "reward"
REWARD_SUCCESS = "reward/success"
REWARD_DETECTOR = "reward/detector"  # JSON, latched: {detector: positions|classifier, error}
REWARD_CLASSIFIER = "reward/classifier"  # JSON, latched: the success classifier's version, metrics, agreement
REWARD_SCORE = "reward/score"  # Float32 per frame: the success classifier's P(success) (reward.detector: classifier)
EPISODE_EVENT = "episode/event"
EPISODE_STATE = "episode/state"  # JSON: state, episode, steps, held (why); latched, transient-local
LEARNER_STATS = "learner/stats"
LEARNER_TIMING = "learner/timing"  # JSON per action: step, tick_time, compute_ms, image_stamp
LEARNER_ACTING = "learner/acting"  # JSON: episode, step whose action the learner starts computing
# acting:=robot (the policy acts on the robot host, docs/multi_host.md):
POLICY_WEIGHTS = "learner/policy_weights"  # UInt8MultiArray chunks; dim[0].label: JSON header (weight_transport)
ACTOR_STEPS = "actor/steps"  # JSON per step the actor took: episode, step, state, image_stamp, action, policy_version
SRV_ESTOP = "robot/estop"
SRV_ESTOP_CLEAR = "robot/estop_clear"
SRV_HOME = "robot/home"
SRV_REBOOT_MOTORS = "robot/reboot_motors"
SRV_SIM_RESET = "sim/reset"
TELEOP_JOY = "teleop/joy"  # sensor_msgs/Joy from the joy / spacenav driver
TELEOP_ACTION = "teleop/action"  # Float32MultiArray (7) from the page; dim[0].label "takeover" or "release"
ROBOT_EXECUTED = "robot/executed"  # JSON per step: step, action executed, source policy/intervention/held, refused

CAMERA_FRAME_ID = "third_person_camera"
