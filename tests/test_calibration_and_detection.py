"""Calibration math on synthetic views with known poses, and object/reward detection on rendered
sim frames with known object poses."""

import json
import os

import cv2
import numpy as np
import pytest

from parl_robot.config import PerceptionConfig, load_config
from parl_robot.perception.calibration import (
    CalibrationError, CameraModel, Intrinsics, calibrate_extrinsics, calibrate_intrinsics, chessboard_points,
    find_aruco_centre, task_workspace_overlay,
)
from parl_robot.perception.calibration_capture import capture_board_images
from parl_robot.perception.object_detector import detect_object
from parl_robot.perception.object_poses import LastSeenPosition, ObjectPoses, decode_object_poses, encode_object_poses
from parl_robot.perception.success import is_success
from parl_robot.sim.env import WidowXSimEnv

TRUE_K = np.array([[520.0, 0, 318.0], [0, 515.0, 242.0], [0, 0, 1]])
BOARD, SQUARE = (9, 6), 0.025


def _look_at(camera_position, target):
    """OpenCV R (world -> camera) for a camera at `camera_position` looking at `target`."""
    forward = (target - camera_position) / np.linalg.norm(target - camera_position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def _render_chessboard(rotation, translation, size=(640, 480)):
    """A chessboard (9x6 inner corners) seen by a pinhole camera TRUE_K with the board at (R, t)."""
    cell = 40
    board = np.full(((BOARD[1] + 3) * cell, (BOARD[0] + 3) * cell), 255, np.uint8)
    for r in range(BOARD[1] + 1):
        for c in range(BOARD[0] + 1):
            if (r + c) % 2 == 0:
                board[(r + 1) * cell : (r + 2) * cell, (c + 1) * cell : (c + 2) * cell] = 0
    # Board pixel (x, y) -> board-plane metres: the first inner corner is at pixel (2*cell, 2*cell).
    metres_per_px = SQUARE / cell
    to_plane = np.array([[metres_per_px, 0, -2 * cell * metres_per_px], [0, metres_per_px, -2 * cell * metres_per_px], [0, 0, 1]])
    plane_to_image = TRUE_K @ np.column_stack([rotation[:, 0], rotation[:, 1], translation])
    homography = plane_to_image @ to_plane
    image = cv2.warpPerspective(board, homography, size, flags=cv2.INTER_AREA, borderValue=255)
    return cv2.GaussianBlur(image, (3, 3), 0.6)


def test_intrinsics_from_synthetic_chessboard_views():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(10):
        rvec = rng.normal(0, 0.25, 3)
        rotation, _ = cv2.Rodrigues(rvec)
        centre = chessboard_points(BOARD, SQUARE).mean(0)
        translation = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.35, 0.5)]) - rotation @ centre
        images.append(_render_chessboard(rotation, translation))
    camera_matrix, distortion, rms, used = calibrate_intrinsics(images, BOARD, SQUARE)
    assert used >= 8 and rms < 1.0  # reprojection error under 1 px
    assert np.allclose(np.diag(camera_matrix)[:2], np.diag(TRUE_K)[:2], rtol=0.02)
    assert np.allclose(camera_matrix[:2, 2], TRUE_K[:2, 2], atol=6.0)
    with pytest.raises(CalibrationError, match="found in 0 of 2"):
        calibrate_intrinsics([np.full((480, 640), 255, np.uint8)] * 2, BOARD, SQUARE)


def test_capture_keeps_the_frames_that_show_the_board(tmp_path):
    """`calibrate capture`'s loop on a camera that shows an empty view, then the board from two poses."""
    rng = np.random.default_rng(4)
    views = []
    for _ in range(2):
        rotation, _ = cv2.Rodrigues(rng.normal(0, 0.25, 3))
        views.append(_render_chessboard(rotation, np.array([0, 0, 0.4]) - rotation @ chessboard_points(BOARD, SQUARE).mean(0)))
    frames = iter([np.full((480, 640), 255, np.uint8), *views, views[0]])
    waits, lines = [], []
    saved = capture_board_images(lambda: np.dstack([next(frames)] * 3), tmp_path / "board", 2, BOARD, interval_s=1.5,
                                 wait=waits.append, report=lines.append)
    assert [p.name for p in saved] == ["board_000.png", "board_001.png"]
    assert cv2.imread(str(saved[1]), cv2.IMREAD_GRAYSCALE).shape == (480, 640)
    assert "no 9x6 chessboard found" in lines[0] and waits.count(1.5) == 2  # time to move the board after each


def test_extrinsics_from_marker_points_recover_the_camera_pose(tmp_path):
    rng = np.random.default_rng(1)
    camera_position = np.array([0.85, -0.35, 0.55])
    rotation = _look_at(camera_position, np.array([0.3, 0.0, 0.05]))
    translation = -rotation @ camera_position
    truth = CameraModel(TRUE_K, np.zeros(5), 640, 480, rotation, translation)
    # Marker centres at 12 gripper positions in the workspace, detected with 0.3 px noise.
    points = rng.uniform([0.18, -0.2, 0.05], [0.42, 0.2, 0.3], (12, 3))
    pixels = truth.project(points) + rng.normal(0, 0.3, (12, 2))
    found_rotation, found_translation, error = calibrate_extrinsics(points, pixels, TRUE_K, np.zeros(5))
    assert error < 1.0
    found = CameraModel(TRUE_K, np.zeros(5), 640, 480, found_rotation, found_translation, error)
    assert np.linalg.norm(found.camera_position - camera_position) < 0.01
    assert np.allclose(found_rotation, rotation, atol=0.01)
    # Round trip through YAML, and the pixel -> table-plane inverse.
    loaded = CameraModel.load(found.save(tmp_path / "calibration" / "camera.yaml"))
    table_point = np.array([0.3, 0.1, 0.02])
    assert np.allclose(loaded.pixel_to_plane(truth.project(table_point[None])[0], 0.02), table_point, atol=0.005)
    with pytest.raises(CalibrationError, match="coplanar"):
        calibrate_extrinsics(points * [1, 1, 0], pixels, TRUE_K, np.zeros(5))
    (tmp_path / "bad.yaml").write_text("camera_matrix: [[1, 0], [0, 1]]\n")
    with pytest.raises(CalibrationError, match="missing key"):
        CameraModel.load(tmp_path / "bad.yaml")


def test_aruco_marker_centre_is_found_to_subpixel():
    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
    marker = cv2.aruco.generateImageMarker(dictionary, 7, 60)
    image = np.full((240, 320), 255, np.uint8)
    image[100:160, 180:240] = marker
    centre = find_aruco_centre(np.dstack([image] * 3), 7)
    assert centre is not None and np.allclose(centre, [209.5, 129.5], atol=0.6)
    assert find_aruco_centre(np.dstack([image] * 3), 8) is None


def test_task_workspace_overlay_from_touched_points():
    overlay = task_workspace_overlay(
        target_points=[[0.26, 0.06, 0.03], [0.36, 0.16, 0.03], [0.31, 0.11, 0.15]],
        workspace_points=[[0.15, -0.25, 0.04], [0.45, 0.25, 0.35]],
    )
    assert overlay["reward"]["target_low"] == [0.25, 0.05, 0.02]
    assert overlay["control"]["safety_box_high"] == [0.45, 0.25, 0.35]
    with pytest.raises(CalibrationError, match="thinner"):
        task_workspace_overlay([[0, 0, 0], [1, 1, 1]], [[0.1, 0.1, 0.1], [0.12, 0.5, 0.5]])


def test_colour_detector_and_reward_on_rendered_sim_frames():
    cfg = load_config(task="cup_to_rack")
    env = WidowXSimEnv(cfg)
    camera = env.world.camera_model()
    perception = PerceptionConfig(object_plane_height_m=0.04)
    errors, agreements = [], 0
    placements = [None, None, None, [0.31, 0.11], [0.30, 0.09], [0.33, 0.13]]  # last three on the rack
    for seed, place in enumerate(placements):
        env.reset(seed=seed)
        if place is not None:
            adr = env.world.object_qpos["cup"]
            env.world.data.qpos[adr : adr + 3] = [place[0], place[1], 0.02 + 0.04 + 0.001]
            import mujoco

            mujoco.mj_forward(env.world.model, env.world.data)
        true_position = env.world.object_position("cup")
        detection = detect_object(env.world.render(), camera, perception)
        assert detection is not None and detection.area_px >= perception.min_blob_area_px
        errors.append(np.linalg.norm(detection.position[:2] - true_position[:2]))
        agreements += is_success(detection.position, True, cfg.reward) == is_success(true_position, True, cfg.reward)
    env.close()
    # Within 1 cm when the cup stands on the table (the plane the detector assumes); on the 2 cm
    # high rack the single-plane assumption costs about 2.6 cm along the viewing ray.
    assert max(errors[:3]) < 0.01 and max(errors[3:]) < 0.035, errors
    assert agreements == len(placements)  # the detector's success equals the ground truth's


def test_detector_rejects_mismatched_resolution_and_finds_nothing_on_empty_frames():
    cfg = load_config(task="cup_to_rack")
    env = WidowXSimEnv(cfg)
    camera = env.world.camera_model()
    env.close()
    with pytest.raises(ValueError, match="for_output_size"):
        detect_object(np.zeros((64, 64, 3), np.uint8), camera, PerceptionConfig())
    assert detect_object(np.zeros((128, 128, 3), np.uint8), camera, PerceptionConfig()) is None


def test_last_seen_position_flags_occlusion_with_its_age_and_the_message_reads_both_ways():
    memory = LastSeenPosition("cup")
    assert memory.update(None, 10.0) is None  # never seen: no invented pose
    seen = memory.update(np.array([0.3, 0.1, 0.04]), 10.5)
    assert seen == ObjectPoses({"cup": [0.3, 0.1, 0.04]}, {"cup": False}, {"cup": 0.0}, 10.5)
    occluded = memory.update(None, 11.75)  # the gripper is over it
    assert occluded == ObjectPoses({"cup": [0.3, 0.1, 0.04]}, {"cup": True}, {"cup": 1.25}, 11.75)
    text = encode_object_poses(occluded)
    assert decode_object_poses(text) == occluded
    assert json.loads(text)["cup"] == [0.3, 0.1, 0.04]  # readers that look up the name alone still work
    # The earlier format (no `_meta`) reads as seen now; malformed entries are left out.
    legacy = decode_object_poses(json.dumps({"cup": [1, 2, 3], "rack": [1, 2], "_meta": 5}))
    assert legacy == ObjectPoses({"cup": [1.0, 2.0, 3.0]}, {"cup": False}, {"cup": 0.0}, None)
    assert decode_object_poses("[1, 2, 3]") is None and decode_object_poses("not json") is None


def test_detector_node_keeps_publishing_the_last_seen_pose_while_occluded(tmp_path, monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    from parl_robot.nodes import common
    from parl_robot.nodes.object_detector_node import ObjectDetectorNode

    cfg = load_config(task="cup_to_rack")
    env = WidowXSimEnv(cfg)
    env.reset(seed=0)
    frame, true_position = env.world.render(), env.world.object_position("cup")
    env.world.camera_model().save(tmp_path / "camera.yaml")
    env.close()
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"perception:\n  calibration_file: {tmp_path / 'camera.yaml'}\n  object_plane_height_m: 0.04\n")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=["--ros-args", "-p", "task:=cup_to_rack", "-p", f"overlay:={overlay}"])
    node = ObjectDetectorNode()
    published = []
    monkeypatch.setattr(node.poses_pub, "publish", lambda msg: published.append(decode_object_poses(msg.data)))

    def image(rgb, seconds):
        return common.rgb_image_message(rgb, rclpy.time.Time(nanoseconds=int(seconds * 1e9)).to_msg())

    try:
        node.on_image(image(np.zeros_like(frame), 99.0))  # nothing seen yet: nothing published
        assert published == []
        node.on_image(image(frame, 100.0))
        node.on_image(image(np.zeros_like(frame), 100.5))  # occluded: the last seen pose, flagged, with its age
        node.on_image(image(frame, 101.0))
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert [(p.occluded["cup"], p.age_s["cup"], p.stamp) for p in published] == [(False, 0.0, 100.0), (True, 0.5, 100.5), (False, 0.0, 101.0)]
    assert published[1].positions == published[0].positions
    assert np.linalg.norm(np.array(published[0].positions["cup"][:2]) - true_position[:2]) < 0.01


def test_calibrate_command_end_to_end_on_synthetic_files(tmp_path, capsys):
    """The `parl-robot calibrate` tool from image files to the camera.yaml the detector node loads."""
    from parl_robot.cli import main

    rng = np.random.default_rng(3)
    (tmp_path / "board").mkdir()
    for i in range(8):
        rotation, _ = cv2.Rodrigues(rng.normal(0, 0.25, 3))
        translation = np.array([0, 0, rng.uniform(0.35, 0.5)]) - rotation @ chessboard_points(BOARD, SQUARE).mean(0)
        cv2.imwrite(str(tmp_path / "board" / f"view_{i}.png"), _render_chessboard(rotation, translation))
    assert main(["calibrate", "intrinsics", f"images:={tmp_path / 'board'}", f"out:={tmp_path / 'intrinsics.yaml'}"]) == 0
    printed = capsys.readouterr().out
    assert "intrinsics from 8/8 views at 640x480" in printed and "published 128x128 (task cup_to_rack" in printed
    intrinsics = Intrinsics.load(tmp_path / "intrinsics.yaml")
    assert (intrinsics.width, intrinsics.height, intrinsics.views) == (640, 480, 8)
    assert np.allclose(intrinsics.camera_matrix[:2, :2], TRUE_K[:2, :2], rtol=0.02, atol=1.0)

    camera_position = np.array([0.8, -0.3, 0.5])
    rotation = _look_at(camera_position, np.array([0.3, 0.0, 0.05]))
    truth = CameraModel(TRUE_K, np.zeros(5), 640, 480, rotation, -rotation @ camera_position)
    points = rng.uniform([0.18, -0.2, 0.05], [0.42, 0.2, 0.3], (8, 3))
    samples = [{"pixel": pixel.tolist(), "point": point.tolist()} for pixel, point in zip(truth.project(points), points)]
    import yaml

    (tmp_path / "samples.yaml").write_text(yaml.safe_dump({"samples": samples}))
    assert main(["calibrate", "extrinsics", f"samples:={tmp_path / 'samples.yaml'}",
                 f"intrinsics:={tmp_path / 'intrinsics.yaml'}", f"out:={tmp_path / 'camera.yaml'}"]) == 0
    model = CameraModel.load(tmp_path / "camera.yaml")
    assert np.linalg.norm(model.camera_position - camera_position) < 0.02 and model.reprojection_error_px < 1.0

    (tmp_path / "points.yaml").write_text(yaml.safe_dump(
        {"target": [[0.26, 0.06, 0.03], [0.36, 0.16, 0.15]], "workspace": [[0.2, -0.15, 0.05], [0.36, 0.15, 0.24]]}))
    out = tmp_path / "task.yaml"
    assert main(["calibrate", "task", "task:=cup_to_rack", f"points:={tmp_path / 'points.yaml'}", f"out:={out}", "grid:=3x3x2"]) == 0
    cfg = load_config(task="cup_to_rack", overlays=[out])  # the output is a valid config overlay
    assert cfg.reward.target_low == [0.25, 0.05, 0.02]
    assert main(["calibrate", "extrinsics", f"samples:={tmp_path / 'missing.yaml'}",
                 f"intrinsics:={tmp_path / 'intrinsics.yaml'}"]) == 1


def test_sim_bridge_poses_and_an_occluded_detection_both_score_in_the_reward_node(monkeypatch):
    """The two publishers of `objects/poses` and its reader agree on the message."""
    rclpy = pytest.importorskip("rclpy")
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from parl_robot.nodes.reward_node import RewardNode
    from parl_robot.nodes.sim_bridge_node import SimBridgeNode

    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(args=["--ros-args", "-p", "task:=cup_to_rack"])
    bridge, reward = SimBridgeNode(), RewardNode()
    sent, rewards = [], []
    monkeypatch.setattr(bridge.objects_pub, "publish", sent.append)
    monkeypatch.setattr(reward.reward_pub, "publish", lambda msg: rewards.append(msg.data))
    try:
        bridge.publish_objects()
        truth = decode_object_poses(sent[-1].data)
        assert truth.positions["cup"] == bridge.world.object_position("cup").round(5).tolist()
        assert truth.occluded["cup"] is False and truth.age_s["cup"] == 0.0 and truth.stamp > 0
        reward.on_state(JointState(name=["gripper"], position=[1.0]))
        reward.on_objects(sent[-1])
        in_target = ObjectPoses({"cup": list(np.add(reward.cfg.reward.target_low, reward.cfg.reward.target_high) / 2)},
                                {"cup": True}, {"cup": 2.0}, 50.0)
        reward.on_objects(String(data=encode_object_poses(in_target)))
        assert rewards == [reward.cfg.reward.reward_bias, reward.cfg.reward.reward_bias + reward.cfg.reward.success_reward]
    finally:
        bridge.close()
        bridge.destroy_node()
        reward.destroy_node()
        rclpy.shutdown()
def test_capture_command_reads_the_camera_like_the_camera_node(tmp_path, capsys):
    """`calibrate capture` opens the device with the camera node's `open_capture` (a video file
    stands in for the USB camera) and saves full-size frames that `calibrate intrinsics` accepts."""
    pytest.importorskip("rclpy")
    from parl_robot.cli import main

    rng = np.random.default_rng(5)
    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for _ in range(40):
        rotation, _ = cv2.Rodrigues(rng.normal(0, 0.25, 3))
        translation = np.array([0, 0, rng.uniform(0.35, 0.5)]) - rotation @ chessboard_points(BOARD, SQUARE).mean(0)
        writer.write(cv2.cvtColor(_render_chessboard(rotation, translation), cv2.COLOR_GRAY2BGR))
    writer.release()
    board = tmp_path / "board"
    assert main(["calibrate", "capture", f"out:={board}", "count:=6", "interval:=0", f"device:={video}"]) == 0
    assert "6/6 chessboard frames" in capsys.readouterr().out
    assert sorted(p.name for p in board.iterdir()) == [f"board_{i:03d}.png" for i in range(6)]
    assert main(["calibrate", "intrinsics", f"images:={board}", f"out:={tmp_path / 'intrinsics.yaml'}"]) == 0
    assert Intrinsics.load(tmp_path / "intrinsics.yaml").reprojection_error_px < 1.0
