"""`acting:=robot`: the actor node acts beside the arm from the weights the learner publishes, and
the learner stores exactly the steps the actor took (whole graph, real rclpy / Fast DDS, sim)."""

import contextlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from std_msgs.msg import Float32MultiArray, String  # noqa: E402

from graph_harness import Observer, isolated_ros_env, stop_launch, wait_for_launch  # noqa: E402
from parl_robot.config import load_config  # noqa: E402
from parl_robot.data.episode_store import EpisodeStore  # noqa: E402
from parl_robot.nodes import common  # noqa: E402
from parl_robot.observation import STATE_DIM  # noqa: E402
from parl_robot.sim.record_demos import record_demos  # noqa: E402

EPISODES = 3
OVERRIDES = {
    "episodes.num_online_episodes": EPISODES,
    "learner.schedule.warmup_episodes": 1,
    "learner.schedule.offline_policy_steps": 40,
    "learner.schedule.offline_critic_steps": 20,
    "learner.schedule.updates_per_step": 0.5,
    "learner.schedule.warmup_critic_steps": 20,
    "control.max_episode_steps": 12,
}


@pytest.mark.slow
def test_actor_on_the_robot_host_acts_from_published_weights_and_the_learner_stores_its_steps(tmp_path):
    store_dir = tmp_path / "store"
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(store_dir)})
    store = EpisodeStore(store_dir)
    record_demos(cfg, store, 3, log=lambda *_: None)
    domain_id, env = isolated_ros_env()
    observer = Observer(domain_id)
    actor_steps: list[dict] = []
    observer.node.create_subscription(String, common.ACTOR_STEPS, lambda m: actor_steps.append(json.loads(m.data)),
                                      common.COMMAND_QOS)
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-u", "-m", "parl_robot.cli", "launch", "finetune", "task:=cup_to_rack", "sim:=true",
             "overlay:=cpu_demo", f"store_dir:={store_dir}", "acting:=robot", f"overrides:={json.dumps(OVERRIDES)}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    deadline = time.monotonic() + 600  # the run's own budget: pre-training, catch-up and 3 short episodes
    try:
        # Who publishes robot/action while the arm is driven: the actor, never the learner.
        wait_for_launch(launcher, deadline, until=lambda: bool(actor_steps))
        publishers = {info.node_name for info in observer.node.get_publishers_info_by_topic(f"/{common.NAMESPACE}/{common.ROBOT_ACTION}")}
        wait_for_launch(launcher, deadline)
    finally:
        still_running = launcher.poll() is None
        stop_launch(launcher)
        observer.close()
    output = log_path.read_text()
    assert not still_running, "the run did not finish within its 600 s budget:\n" + output[-6000:]
    assert launcher.returncode == 0, output[-4000:]
    assert "actor" in publishers and "learner" not in publishers, publishers
    assert "[learner]" in output and "published policy v0 for the robot host" in output, output[-3000:]
    assert "acting with policy v0 (first weights" in output, output[-3000:]

    online = sorted((r for r in store.records() if r["kind"] == "online"), key=lambda r: r["episode_id"])
    assert len(online) == EPISODES, output[-3000:]
    episodes = sorted({step["episode"] for step in actor_steps})
    assert len(episodes) == EPISODES
    for record, episode_number in zip(online, episodes):
        steps = sorted((s for s in actor_steps if s["episode"] == episode_number), key=lambda s: s["step"])
        _, episode = store.load_episode(record["episode_id"])
        assert [s["step"] for s in steps] == list(range(len(steps))) and len(episode.actions) == len(steps)
        # What the learner stored is what the actor saw and did.
        np.testing.assert_allclose(episode.actions, [s["action"] for s in steps], rtol=0, atol=1e-6)
        np.testing.assert_allclose(episode.states[:-1], [s["state"] for s in steps], rtol=0, atol=1e-6)
    # The robot host's own copy (<store_dir>/robot_host, here the same machine) holds the same episodes.
    copies = sorted((r for r in EpisodeStore(store_dir / "robot_host").records() if not r["aborted"]),
                    key=lambda r: r["episode_id"])
    assert [(r["label"], r["steps"]) for r in copies] == [(r["label"], r["steps"]) for r in online], copies
    for record, copied in zip(online, copies):
        np.testing.assert_allclose(EpisodeStore(store_dir / "robot_host").load_episode(copied["episode_id"])[1].actions,
                                   store.load_episode(record["episode_id"])[1].actions, atol=1e-6)
    # New versions reach the actor as the learner closes them (at each stored episode) and are used.
    versions = [step["policy_version"] for step in actor_steps]
    assert versions == sorted(versions) and versions[0] == 0 and versions[-1] >= 1, versions


@contextlib.contextmanager
def _learner_in_this_process(tmp_path, acting: str, sim_time: bool = False):
    """A learner node in this process (its own DDS domain, two recorded demos, one pre-training update
    each), closed and rclpy shut down at the end."""
    from parl_robot.nodes.learner_node import LearnerNode

    store_dir = tmp_path / "store"
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(store_dir)})
    record_demos(cfg, EpisodeStore(store_dir), 2, log=lambda *_: None)
    overrides = {"learner.schedule.offline_policy_steps": 1, "learner.schedule.offline_critic_steps": 1}
    domain_id, _ = isolated_ros_env()
    rclpy.init(args=["--ros-args", "-r", f"__ns:=/{common.NAMESPACE}", "-p", "task:=cup_to_rack", "-p", "overlay:=cpu_demo",
                     "-p", f"store_dir:={store_dir}", "-p", f"acting:={acting}", "-p", f"overrides:='{json.dumps(overrides)}'",
                     "-p", f"use_sim_time:={str(sim_time).lower()}"],
               domain_id=domain_id)
    node = LearnerNode()
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown()


def _actor_step(episode: int, step: int) -> String:
    return String(data=json.dumps({"episode": episode, "step": step, "state": [0.01 * step] * STATE_DIM,
                                   "image_stamp": None, "action": [0.1 * step] * 7, "policy_version": 0}))


def test_the_learner_waits_for_the_actors_last_steps_before_it_stores_an_ended_episode(tmp_path):
    """The episode manager's `end` (and the label after it) can overtake the actor's last step record:
    the learner stores the episode only when all the steps the arm executed are in."""
    with _learner_in_this_process(tmp_path, acting="robot") as node:
        node.ee_position, node.gripper_open, node.object_position = np.zeros(3), True, np.ones(3)  # the final state
        node.handle_event("start", {"episode": 4})
        node.on_actor_step(_actor_step(4, 0))
        node.on_actor_step(_actor_step(4, 1))
        node.handle_event("end", {"episode": 4, "steps": 3, "success": False})
        node.handle_event("label", {"episode": 4, "success": False, "source": "detector"})
        assert not [r for r in node.store.records() if r["kind"] == "online"]  # step 2 is still due
        node.on_actor_step(_actor_step(4, 2))
        online = [r for r in node.store.records() if r["kind"] == "online"]
        assert len(online) == 1 and online[0]["steps"] == 3
        _, episode = node.store.load_episode(online[0]["episode_id"])
        np.testing.assert_allclose(episode.actions[:, 0], [0.0, 0.1, 0.2], atol=1e-6)
        assert len(episode.states) == 4
        # A step that never comes: after the wait the episode closes, flagged, and is not stored.
        node.handle_event("start", {"episode": 5})
        node.on_actor_step(_actor_step(5, 0))
        node.handle_event("end", {"episode": 5, "steps": 2, "success": False})
        node.handle_event("label", {"episode": 5, "success": False, "source": "detector"})
        node.pending_end["since"] -= 10.0
        node._finish_pending_end()
        assert node.pending_end is None and len([r for r in node.store.records() if r["kind"] == "online"]) == 1


def test_actor_steps_taken_before_the_learner_handled_start_join_the_episode(tmp_path):
    """The actor acts on "start" at once; a learner busy saving another arm's episode can take the actor's
    first steps from its queue before the "start" event (another writer, another topic): they are kept
    and join the episode when its start comes, instead of leaving a gap that discards the episode."""
    with _learner_in_this_process(tmp_path, acting="robot") as node:
        node.ee_position, node.gripper_open, node.object_position = np.zeros(3), True, np.ones(3)
        node.on_actor_step(_actor_step(7, 0))
        node.on_actor_step(_actor_step(7, 1))
        node.handle_event("start", {"episode": 7})
        node.on_actor_step(_actor_step(7, 2))
        assert len(node.recorder.actions) == 3 and not node.recorder.gap
        node.handle_event("end", {"episode": 7, "steps": 3, "success": False})
        node.handle_event("label", {"episode": 7, "success": False, "source": "detector"})
        online = [r for r in node.store.records() if r["kind"] == "online"]
        assert len(online) == 1 and online[0]["steps"] == 3
        _, episode = node.store.load_episode(online[0]["episode_id"])
        np.testing.assert_allclose(episode.actions[:, 0], [0.0, 0.1, 0.2], atol=1e-6)
        # A late step of the finished episode is not kept for the next one; an early one of episode 9 is not
        # taken into episode 8.
        node.on_actor_step(_actor_step(7, 3))
        node.on_actor_step(_actor_step(9, 0))
        node.handle_event("start", {"episode": 8})
        assert node.recorder.actions == [] and not node.recorder.gap and not node.early_steps


def test_an_acting_node_does_not_act_while_another_one_publishes_actions(tmp_path):
    """The learner side launched with acting:=learner and the robot side with acting:=robot would give
    the arm two policies' actions: each acting node stands down while the other publishes."""
    with _learner_in_this_process(tmp_path, acting="learner") as learner:
        actor = rclpy.create_node("actor")  # stands for a robot-side actor node
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(learner)
        executor.add_node(actor)
        try:
            learner.ee_position, learner.gripper_open, learner.object_position = np.zeros(3), True, np.ones(3)

            def tick_with_fresh_inputs() -> None:
                learner.input_times["objects/poses"] = time.monotonic()
                learner.on_control_tick()

            learner.handle_event("start", {"episode": 0})
            learner.check_other_acting_nodes()
            tick_with_fresh_inputs()
            assert learner.step == 1  # alone: it acts
            publisher = actor.create_publisher(Float32MultiArray, common.ROBOT_ACTION, common.COMMAND_QOS)
            deadline = time.monotonic() + 30  # discovery within the process
            while not learner.other_acting_nodes and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
                learner.check_other_acting_nodes()
            assert learner.other_acting_nodes == ["actor"] and "acts too" in learner.warning
            steps = learner.step  # (its own timer may have acted while discovery ran)
            tick_with_fresh_inputs()
            assert learner.step == steps  # stood down
            actor.destroy_publisher(publisher)
            learner.check_other_acting_nodes()
            tick_with_fresh_inputs()
            assert learner.other_acting_nodes == [] and learner.step == steps + 1
        finally:
            executor.shutdown()
            actor.destroy_node()


def test_in_lockstep_step_0_is_acted_on_when_the_episodes_first_tick_came_before_its_start(tmp_path):
    """Sim time waits for step 0's action; when the tick that began the period came before "start" was
    handled, the node acts on its own FIRST_STEP_GUARD_S (wall) after "start", once."""
    from parl_robot.nodes.acting_node import FIRST_STEP_GUARD_S

    with _learner_in_this_process(tmp_path, acting="learner", sim_time=True) as learner:
        assert learner.await_execution
        announced = []
        learner.acting_pub.publish = announced.append  # learner/acting: what the sim bridge's clock waits on
        learner.ee_position, learner.gripper_open, learner.object_position = np.zeros(3), True, np.ones(3)
        learner.on_control_tick()  # the period's tick, before "start": nothing to act on
        assert learner.step == 0
        learner.handle_event("start", {"episode": 3})
        learner.input_times["objects/poses"] = time.monotonic()
        learner.guard_first_step()  # too early: the regular tick may still come
        assert learner.step == 0 and not announced
        learner.first_step_due_since -= FIRST_STEP_GUARD_S
        learner.guard_first_step()
        assert learner.step == 1 and learner.unexecuted_step == 0
        assert json.loads(announced[0].data) == {"episode": 3, "step": 0}
        learner.first_step_due_since = time.monotonic() - 10 * FIRST_STEP_GUARD_S
        learner.guard_first_step()  # step 0 is out: the guard is done for this episode
        assert learner.step == 1 and learner.first_step_due_since is None and len(announced) == 1


def test_the_robot_host_keeps_its_own_copy_of_every_episode_the_actor_drove(tmp_path):
    """With acting:=robot the actor writes each episode it drove into <store_dir>/robot_host (labelled
    as the label says, an aborted one flagged, a discarded one not at all), so a learner that is down
    or across a cut link loses nothing the arm did."""
    from parl_robot.nodes.actor_node import ROBOT_COPY_DIR, ActorNode

    store_dir = tmp_path / "robot_store"
    domain_id, _ = isolated_ros_env()
    rclpy.init(args=["--ros-args", "-r", f"__ns:=/{common.NAMESPACE}", "-p", "task:=cup_to_rack", "-p", "overlay:=cpu_demo",
                     "-p", f"store_dir:={store_dir}"], domain_id=domain_id)
    actor = ActorNode()
    try:
        actor.ee_position, actor.gripper_open = np.array([0.3, 0.0, 0.2]), True

        def drive(episode: int, steps: int) -> list[np.ndarray]:
            actor.handle_event("start", {"episode": episode})
            actions = []
            for step in range(steps):
                actor.object_position = np.array([0.35, 0.01 * step, 0.02])
                action = np.full(7, 0.1 * (step + 1), np.float32)
                actor.acted(actor.observation(), action)
                actor.step += 1
                actor.latest_reward = -1.0
                actions.append(action)
            return actions

        actions = drive(0, 3)
        actor.on_step_executed(1, {"action": [0.5] * 7, "source": "intervention"})  # the operator drove step 1
        actor.latest_reward = 0.0  # the detector saw success at the end
        actor.handle_event("end", {"episode": 0, "steps": 3})
        actor.handle_event("label", {"episode": 0, "success": False, "source": "operator"})  # the operator says no
        drive(1, 2)
        actor.handle_event("aborted", {"episode": 1, "reason": "estop"})
        drive(2, 2)
        actor.handle_event("end", {"episode": 2, "steps": 2})
        actor.handle_event("discarded", {"episode": 2})

        copy = EpisodeStore(store_dir / ROBOT_COPY_DIR)
        records = sorted(copy.records(), key=lambda r: r["episode_id"])
        assert [(r["label"], r["steps"], r["aborted"]) for r in records] == [("failure", 3, False), ("aborted", 2, True)]
        assert records[0]["label_source"] == "operator" and records[0]["intervention_steps"] == 1
        assert records[1]["abort_reason"] == "estop"
        _, first = copy.load_episode(records[0]["episode_id"])
        np.testing.assert_allclose(first.actions, [actions[0], [0.5] * 7, actions[2]], atol=1e-6)
        assert len(first.states) == 4 and not first.terminal
        np.testing.assert_allclose(first.rewards, [-1.0, -1.0, -1.0])  # the failure label overrides r = 0
        assert not [r for r in EpisodeStore(store_dir).records()]  # the learner's store is not touched
    finally:
        actor.destroy_node()
        rclpy.shutdown()
