"""Several arms feeding one learner (`arms:=N`, issue 29): the graph per arm namespace, the launch
ending when every arm has finished, batched acting, and the learner process with one node per arm."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch

from parl_robot.config import load_config
from parl_robot.graph import finetune_graph, ros_arguments
from parl_robot.launch_arguments import LaunchArgumentError, validate_launch_arguments
from parl_robot.launcher import launch
from parl_robot.observation import STATE_DIM
from tests.test_episode_store_and_launcher import fake_node


def _validated(tmp_path, **arguments) -> dict[str, str]:
    return validate_launch_arguments({"store_dir": str(tmp_path / "store"), **arguments}, require_demos=False)


def test_two_arms_get_their_own_namespace_store_folder_and_page_and_share_one_learner(tmp_path):
    args = _validated(tmp_path, arms="2", lockstep="false", ui_port="8080", success_classifier="true")
    specs = finetune_graph(args)
    labels = [spec.label for spec in specs]
    assert len(labels) == len(set(labels))  # supervision and logs tell the arms apart
    for arm in (0, 1):
        mine = {spec.name: spec for spec in specs if spec.namespace == f"parl/arm{arm}"}
        assert set(mine) == {"sim_bridge", "reward_detector", "episode_manager", "operator_ui", "success_classifier"}
        assert all(spec.parameters["store_dir"] == str(tmp_path / "store" / f"arm{arm}") for spec in mine.values())
        assert mine["operator_ui"].parameters["port"] == str(8080 + arm)
        assert json.loads(mine["operator_ui"].parameters["arm_pages"]) == {"arm0": 8080, "arm1": 8081}
        assert mine["episode_manager"].ends_launch and mine["sim_bridge"].critical
        assert mine["sim_bridge"].parameters["seed_offset"] == arm  # not the same scenes on both arms
        assert f"__ns:=/parl/arm{arm}" in ros_arguments(mine["episode_manager"])
        assert (tmp_path / "store" / f"arm{arm}").is_dir()
    [learner] = [spec for spec in specs if spec.name == "learner"]
    assert learner.namespace == "parl" and learner.parameters["arms"] == 2
    assert learner.parameters["store_dir"] == str(tmp_path / "store")  # demos and checkpoints at the root
    assert not learner.remap_name and "__node:=learner" not in ros_arguments(learner)  # one node per arm inside
    # Split across hosts: every arm's robot side on the robot PCs, the learner and the managers on the server.
    robot = finetune_graph({**args, "role": "robot"})
    assert {spec.label for spec in robot} == {f"arm{a}/{n}" for a in (0, 1) for n in ("sim_bridge", "reward_detector",
                                                                                     "operator_ui")}
    one_pc = finetune_graph({**args, "role": "robot", "arm": "1"})  # the robot PC of arm 1
    assert {spec.label for spec in one_pc} == {"arm1/sim_bridge", "arm1/reward_detector", "arm1/operator_ui"}
    learner_side = finetune_graph({**args, "role": "learner", "acting": "robot"})
    assert {spec.label for spec in learner_side} == {"learner", "arm0/episode_manager", "arm1/episode_manager",
                                                     "arm0/success_classifier", "arm1/success_classifier"}


def test_one_arm_graph_is_unchanged(tmp_path):
    specs = finetune_graph(_validated(tmp_path))
    assert {spec.namespace for spec in specs} == {"parl"} and all(spec.label == spec.name for spec in specs)
    assert "arms" not in next(spec for spec in specs if spec.name == "learner").parameters


@pytest.mark.parametrize("arms, extra, message", [
    ("0", {}, "arms:=0 must be an integer"),
    ("two", {}, "arms:=two must be an integer"),
    ("17", {}, "arms:=17 must be an integer number of arms in 1..16"),
    ("2", {}, "needs lockstep:=false"),  # each sim bridge would drive /clock
    ("3", {"lockstep": "false", "ui_port": "65534"}, "up to 65536"),
    ("2", {"lockstep": "false", "arm": "2", "role": "robot"}, "arm:=2 must be an arm index in 0..1"),
    ("2", {"lockstep": "false", "arm": "0"}, "use it with role:=robot"),
    ("1", {"arm": "0", "role": "robot"}, "it needs arms:= 2 or more"),
])
def test_bad_arm_counts_are_refused_naming_the_argument(tmp_path, arms, extra, message):
    with pytest.raises(LaunchArgumentError, match=message):
        _validated(tmp_path, arms=arms, **extra)


def test_hardware_arms_need_no_lockstep_change(tmp_path):
    specs = finetune_graph(_validated(tmp_path, arms="2", sim="false"))
    assert {spec.label for spec in specs if spec.name == "control"} == {"arm0/control", "arm1/control"}


def test_the_launch_ends_only_when_every_arm_has_finished(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    first, second = fake_node(tmp_path, "manager0", 0, 0.3), fake_node(tmp_path, "manager1", 0, 3.0)
    for index, spec in enumerate((first, second)):
        spec.name, spec.namespace, spec.ends_launch = "episode_manager", f"parl/arm{index}", True
    out = io.StringIO()
    assert launch([first, second, fake_node(tmp_path, "sleeper", 0, 60)], out=out, timeout_s=60) == 0
    text = out.getvalue()
    assert "arm0/episode_manager finished; waiting for arm1/episode_manager" in text
    assert "arm1/episode_manager finished; stopping all nodes" in text and "[arm1/episode_manager] hello" in text


def test_batched_acting_gives_each_arm_the_action_it_would_get_alone():
    """One control step over the arms' stacked states: each row is optimized and selected on its own
    (the policy's samples are a fixed function of the state here, so single and batched calls compare)."""
    from parl_robot.task_agent import agent_for

    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"learner.compute_path": "eager"})
    agent = agent_for(cfg)
    policy = agent.sampling_policy

    def samples_of(obs, count):  # (batch, k, 7): distinct per state
        state = obs["state"].float()
        grid = torch.linspace(-0.9, 0.9, count).view(1, count, 1)
        return torch.tanh(state[:, :7].unsqueeze(1) * 3 + grid)

    policy.sample = samples_of
    rng = np.random.default_rng(0)
    observations = [{"state": rng.uniform(-1, 1, STATE_DIM).astype(np.float32)} for _ in range(3)]
    batched = agent.act_batch(observations)
    for obs, (action, q) in zip(observations, batched):
        alone, q_alone = agent.act(obs)
        np.testing.assert_allclose(action, alone, rtol=0, atol=1e-6)
        assert q == pytest.approx(q_alone, abs=1e-5)
    assert not np.allclose(batched[0][0], batched[1][0])  # the rows are not one state's action repeated


def test_the_learner_process_makes_one_node_per_arm_and_stores_each_arms_episodes_in_its_folder(tmp_path):
    """The learner of two arms in this process: both arms' steps are acted on in one batch, each
    episode is stored in its arm's folder and enters the shared replay buffer."""
    import rclpy

    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.nodes import common
    from parl_robot.nodes.learner_node import LearnerHub
    from parl_robot.sim.record_demos import record_demos
    from tests.graph_harness import isolated_ros_env

    store_dir = tmp_path / "store"
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(store_dir)})
    record_demos(cfg, EpisodeStore(store_dir), 2, log=lambda *_: None)
    overrides = {"learner.schedule.offline_policy_steps": 1, "learner.schedule.offline_critic_steps": 1}
    domain_id, _ = isolated_ros_env()
    rclpy.init(args=["--ros-args", "-r", f"__ns:=/{common.NAMESPACE}", "-p", "task:=cup_to_rack", "-p", "overlay:=cpu_demo",
                     "-p", f"store_dir:={store_dir}", "-p", "arms:=2", "-p", f"overrides:='{json.dumps(overrides)}'"],
               domain_id=domain_id)
    hub = LearnerHub()
    try:
        arm0, arm1 = hub.extra_nodes
        assert (arm0.get_name(), arm1.get_name()) == ("learner_arm0", "learner_arm1")
        assert arm0.resolve_topic_name(arm0.arm_topic(common.ROBOT_ACTION)) == "/parl/arm0/robot/action"
        batch_sizes = []
        act_batch = hub.core.agent.act_batch
        hub.core.agent.act_batch = lambda observations: batch_sizes.append(len(observations)) or act_batch(observations)
        for index, arm in enumerate((arm0, arm1)):
            arm.ee_position, arm.gripper_open = np.array([0.3, 0.0, 0.2]), True
            arm.object_position = np.array([0.35, 0.05 * index, 0.02])
            arm.handle_event("start", {"episode": 0})
        for _ in range(3):
            for arm in (arm0, arm1):
                arm.input_times["objects/poses"] = time.monotonic()
            hub.core.act_for_arms()
        assert batch_sizes == [2, 2, 2] and arm0.step == arm1.step == 3
        before = len(hub.core.online)
        for arm in (arm0, arm1):
            arm.handle_event("end", {"episode": 0, "steps": 3})
            arm.handle_event("label", {"episode": 0, "success": arm is arm1, "source": "detector"})
        for arm in (arm0, arm1):
            [record] = [r for r in arm.store.records() if r["kind"] == "online"]
            assert arm.store.root == store_dir / arm.arm and record["steps"] == 3
        assert [r["success"] for r in (next(iter(arm0.store.records())), next(iter(arm1.store.records())))] == [False, True]
        assert len(hub.core.online) == before + 6 and hub.core.trainer.online_episodes == 2
        assert not any(r["kind"] == "online" for r in EpisodeStore(store_dir).records())  # not in the root
    finally:
        hub.close()
        for node in hub.extra_nodes:
            node.destroy_node()
        hub.destroy_node()
        rclpy.shutdown()


GRAPH_OVERRIDES = {
    "episodes.num_online_episodes": 2,
    "learner.schedule.warmup_episodes": 1,
    "learner.schedule.offline_policy_steps": 40,
    "learner.schedule.offline_critic_steps": 20,
    "learner.schedule.updates_per_step": 0.5,
    "learner.schedule.warmup_critic_steps": 20,
    "control.max_episode_steps": 12,
}


@pytest.mark.slow
@pytest.mark.parametrize("acting", ["learner", "robot"])
def test_two_sim_arms_feed_one_learner(tmp_path, acting):
    """The whole graph with two sim bridges (real processes, Fast DDS, real time): each arm's actions
    come from its own acting node, each arm's episodes land in its store folder, and the launch ends
    when both arms have run their episodes."""
    import subprocess
    import sys

    from std_msgs.msg import Float32MultiArray

    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.nodes import common
    from parl_robot.sim.record_demos import record_demos
    from tests.graph_harness import Observer, isolated_ros_env, stop_launch, wait_for_launch

    store_dir = tmp_path / "store"
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(store_dir)})
    record_demos(cfg, EpisodeStore(store_dir), 3, log=lambda *_: None)
    domain_id, env = isolated_ros_env()
    observer = Observer(domain_id)
    actions: dict[int, list[int]] = {0: [], 1: []}
    publishers: dict[int, set[str]] = {0: set(), 1: set()}
    for arm in (0, 1):
        observer.node.create_subscription(Float32MultiArray, f"arm{arm}/{common.ROBOT_ACTION}",
                                          lambda m, arm=arm: actions[arm].append(m.layout.data_offset), common.COMMAND_QOS)
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-u", "-m", "parl_robot.cli", "launch", "finetune", "task:=cup_to_rack", "sim:=true",
             "arms:=2", "lockstep:=false", "overlay:=cpu_demo", f"store_dir:={store_dir}", f"acting:={acting}",
             f"overrides:={json.dumps(GRAPH_OVERRIDES)}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    deadline = time.monotonic() + 900  # the run's own budget: pre-training, catch-up and 2 short episodes per arm
    try:
        wait_for_launch(launcher, deadline, until=lambda: bool(actions[0] and actions[1]))
        for arm in (0, 1):
            topic = f"/{common.NAMESPACE}/arm{arm}/{common.ROBOT_ACTION}"
            publishers[arm] = {info.node_name for info in observer.node.get_publishers_info_by_topic(topic)}
        wait_for_launch(launcher, deadline)
    finally:
        still_running = launcher.poll() is None
        stop_launch(launcher)
        observer.close()
    output = log_path.read_text()
    assert not still_running, "the run did not finish within its 900 s budget:\n" + output[-6000:]
    assert launcher.returncode == 0, output[-4000:]
    assert "learning from 2 arms (arm0, arm1)" in output, output[-3000:]
    assert "arm0/episode_manager finished; waiting for arm1/episode_manager" in output \
        or "arm1/episode_manager finished; waiting for arm0/episode_manager" in output, output[-3000:]
    for arm in (0, 1):
        expected = {f"learner_arm{arm}"} if acting == "learner" else {"actor"}
        assert publishers[arm] == expected, publishers
        # Episodes a safety hold aborted (the watchdog, when a loaded machine delays an arm's inputs) are
        # kept flagged and do not count: each arm's episode manager ran 2 episodes that ended normally.
        online = [r for r in EpisodeStore(store_dir / f"arm{arm}").records() if r["kind"] == "online" and not r.get("aborted")]
        assert len(online) == 2 and all(r["steps"] > 0 for r in online), output[-3000:]
        assert len(actions[arm]) >= sum(r["steps"] for r in online)
    assert not [r for r in EpisodeStore(store_dir).records() if r["kind"] == "online"]
    if acting == "robot":
        assert output.count("acting with policy v0 (first weights") == 2, output[-3000:]


@pytest.mark.parametrize("text, message", [
    ("arm0=8080", "must be a JSON object of arm -> port"),
    ('{"arm0": "8080"}', "must map each arm's name to its page port"),
    ('{"arm0": 70000}', "must map each arm's name to its page port"),
    ('["arm0"]', "must map each arm's name to its page port"),
])
def test_a_bad_arm_pages_parameter_is_refused_naming_it(text, message):
    pytest.importorskip("rclpy")
    from operator_ui.operator_ui_node import parse_arm_pages

    assert parse_arm_pages("") == {} and parse_arm_pages('{"arm0": 8080, "arm1": 8081}') == {"arm0": 8080, "arm1": 8081}
    with pytest.raises(ValueError, match="parameter arm_pages " + message):
        parse_arm_pages(text)
