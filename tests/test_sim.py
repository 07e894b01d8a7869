import mujoco
import numpy as np
import pytest

from parl_robot.config import TaskConfig, load_config
from parl_robot.perception.success import is_success
from parl_robot.robot.safety import DOWNWARD_ROTATION, rotation_about_axis
from parl_robot.sim.demonstrator import ScriptedDemonstrator
from parl_robot.sim.env import WidowXSimEnv
from parl_robot.sim.scenes import distractors_active
from parl_robot.sim.widowx_model import HOME_EE_POSITION


@pytest.fixture
def env(cfg):
    environment = WidowXSimEnv(cfg)
    yield environment
    environment.close()


def test_zero_joints_put_gripper_at_published_home_pose(env):
    env.world.set_arm(np.zeros(6), gripper_open=True)
    position, rotation = env.world.ee_pose()
    assert np.allclose(position, HOME_EE_POSITION, atol=1e-6)
    assert np.allclose(rotation, np.eye(3), atol=1e-6)


@pytest.mark.parametrize("target", [[0.30, -0.10, 0.08], [0.35, 0.12, 0.15], [0.25, 0.0, 0.25]])
def test_ik_reaches_targets(env, target):
    env.reset(seed=0)
    rotation = rotation_about_axis(np.array([0.0, 0.0, 0.3])) @ DOWNWARD_ROTATION
    joints, error = env.world.solve_ik(np.array(target), rotation)
    env.world.set_arm(joints, True)
    position, reached_rotation = env.world.ee_pose()
    assert error < 1e-3 and np.linalg.norm(position - target) < 1e-3
    assert np.allclose(reached_rotation, rotation, atol=5e-3)


def test_resets_randomize_within_configured_range(env, cfg):
    positions = [env.reset(seed=s)[0]["state"][4:7] for s in range(8)]
    xy = np.array(positions)[:, :2]
    assert np.all(xy >= np.array(cfg.sim.object_xy_low) - 0.01) and np.all(xy <= np.array(cfg.sim.object_xy_high) + 0.01)
    assert np.std(xy[:, 0]) > 0.005 and np.std(xy[:, 1]) > 0.005


def test_success_needs_object_in_target_and_open_gripper(cfg):
    centre = (np.array(cfg.reward.target_low) + np.array(cfg.reward.target_high)) / 2
    assert is_success(centre, True, cfg.reward)
    assert not is_success(centre, False, cfg.reward)
    assert not is_success(centre + np.array([0.0, 0.3, 0.0]), True, cfg.reward)


def test_safety_box_clips_commands_in_sim(env, cfg):
    env.reset(seed=1)
    for _ in range(30):
        obs, *_ = env.step(np.array([0, 0, -1, 0, 0, 0, 1.0]))
    assert obs["state"][2] >= cfg.control.safety_box_low[2] - 2e-3


def test_demonstrator_success_rate_in_band(cfg):
    env = WidowXSimEnv(cfg)
    demonstrator = ScriptedDemonstrator(cfg, seed=3)
    successes, side = 0, 0
    for episode in range(30):
        obs, _ = env.reset(seed=1000 + episode)
        demonstrator.reset()
        side += demonstrator.side_approach
        for _ in range(cfg.control.max_episode_steps):
            obs, _, terminal, truncated, _ = env.step(demonstrator.act(obs["state"]))
            if terminal or truncated:
                break
        successes += terminal
    assert 0.5 <= successes / 30 <= 0.97  # realistic: good but not perfect demonstrations
    assert 5 <= side <= 25  # both approach modes appear


def test_render_gives_camera_image(env, cfg):
    env.reset(seed=0)
    image = env.world.render()
    assert image.shape == (cfg.sim.camera_height, cfg.sim.camera_width, 3) and image.dtype == np.uint8
    assert image.std() > 5


def test_a_still_scene_is_rendered_once_and_any_change_renders_again(env, cfg):
    env.reset(seed=0)
    first = env.world.render()
    renders = []
    renderer = env.world._renderer
    original = renderer.render
    renderer.render = lambda *args, **kwargs: renders.append(1) or original(*args, **kwargs)
    again = env.world.render()
    assert np.array_equal(first, again) and not renders  # nothing moved: the same frame, not rendered
    again[:] = 0
    assert np.array_equal(env.world.render(), first)  # callers get copies: the kept frame is intact
    env.step(np.array([1.0, 0, 0, 0, 0, 0, 1.0]))  # the arm moves
    moved = env.world.render()
    assert len(renders) == 1 and not np.array_equal(moved, first)
    env.world._frame_key = None  # what a fresh render of the same state gives
    assert np.array_equal(env.world.render(), moved) and len(renders) == 2
    env.reset(seed=1)  # a reset moves the object
    assert not np.array_equal(env.world.render(), moved) and len(renders) == 3


# ----- all three task scenes, as configured in config/tasks/ ------------------------------------
ALL_TASKS = ("cup_to_rack", "pot_to_sink", "vegetable_to_sink")


def _run_demonstrator(task_cfg: TaskConfig, episodes: int, phase: str = "demo") -> float:
    env = WidowXSimEnv(task_cfg)
    demonstrator = ScriptedDemonstrator(task_cfg, seed=3)
    successes = 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=2000 + episode, options={"phase": phase})
        demonstrator.reset()
        for _ in range(task_cfg.control.max_episode_steps):
            obs, _, terminal, truncated, _ = env.step(demonstrator.act(obs["state"]))
            if terminal or truncated:
                break
        successes += terminal
    env.close()
    return successes / episodes


@pytest.mark.parametrize("task", ALL_TASKS)
def test_each_task_scene_resets_in_range_and_demonstrator_succeeds_sometimes(task):
    task_cfg = load_config(task=task)
    env = WidowXSimEnv(task_cfg)
    starts = np.array([env.reset(seed=s)[0]["state"][4:7] for s in range(6)])
    env.close()
    assert np.all(starts[:, :2] >= np.array(task_cfg.sim.object_xy_low) - 0.01)
    assert np.all(starts[:, :2] <= np.array(task_cfg.sim.object_xy_high) + 0.01)
    # The object starts outside the target region, so an episode is not won at reset.
    assert not any(is_success(p, True, task_cfg.reward) for p in starts)
    assert 0.4 <= _run_demonstrator(task_cfg, episodes=20) <= 0.97


def test_pot_to_sink_distractor_only_online():
    task_cfg = load_config(task="pot_to_sink")
    assert task_cfg.sim.distractors == "online"
    env = WidowXSimEnv(task_cfg)
    reach = 0.65  # the WidowX-250's reach is about 0.65 m from the base
    for phase, expect_on_table in (("demo", False), ("warmup", False), ("online", True)):
        _, info = env.reset(seed=5, options={"phase": phase})
        sponge = info["object_positions"]["sponge"]
        assert (np.linalg.norm(sponge[:2]) < reach) == expect_on_table, phase
    # Parked out of view: moving the parked sponge does not change a single pixel.
    env.reset(seed=5, options={"phase": "demo"})
    before = env.world.render()
    adr = env.world.object_qpos["sponge"]
    env.world.data.qpos[adr : adr + 2] += [0.05, 0.05]
    mujoco.mj_forward(env.world.model, env.world.data)
    assert np.array_equal(before, env.world.render())
    with pytest.raises(ValueError, match="phase"):
        env.reset(seed=5, options={"phse": "online"})
    env.close()


def test_distractor_mode_is_validated():
    assert distractors_active("always", "demo") and not distractors_active("never", "online")
    assert distractors_active("online", "online") and not distractors_active("online", "warmup")
    with pytest.raises(ValueError, match="distractors"):
        distractors_active("sometimes", "online")
