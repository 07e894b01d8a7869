"""The calibration tools end to end: intrinsics moved onto the published images, sample collection
with an arm backend (the MuJoCo twin), the reachable-workspace check, and the example files in
calibration/examples/ read by the project's own loaders."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from parl_robot.cli import main
from parl_robot.config import REPO_ROOT, ConfigError, load_config
from parl_robot.calibrate_cli import write_safety_box
from parl_robot.perception.calibration import (
    CalibrationError, CameraModel, ExtrinsicSamples, Intrinsics, MarkerSample, camera_matrix_for_output,
    centre_crop_box, load_extrinsic_samples, load_task_points,
)
from parl_robot.perception.calibration_capture import calibration_targets, collect_marker_samples, load_pose_list
from parl_robot.perception.object_detector import detect_object
from parl_robot.robot.backend import SimArmBackend
from parl_robot.robot.safety import DOWNWARD_ROTATION
from parl_robot.robot.widowx import pose_matrix, solve_ik
from parl_robot.robot.workspace import beyond_reach, check_workspace, grasp_rotation, propose_reachable_box
from parl_robot.sim.world import SimWorld

NATIVE_K = np.array([[612.0, 0.4, 318.3], [0.0, 609.5, 243.1], [0.0, 0.0, 1.0]])
DISTORTION = np.array([0.08, -0.21, 0.001, -0.0015, 0.09])
PA_RL_BOX = ([0.25, -0.15, 0.16], [0.33, 0.11, 0.29])  # the PA-RL authors' real WidowX workspace


def _look_at(camera_position, target):
    forward = (target - camera_position) / np.linalg.norm(target - camera_position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


def _published_pixels(pixels, capture_size, output_size):
    """Where a capture pixel lands after the camera node's crop and resize (pixel centres to centres)."""
    x0, y0, crop_width, crop_height = centre_crop_box(*capture_size, *output_size)
    scale = np.array([output_size[0] / crop_width, output_size[1] / crop_height])
    return (pixels - [x0, y0] + 0.5) * scale - 0.5


@pytest.mark.parametrize("capture_size, output_size", [
    ((640, 480), (128, 128)),  # capture wider than the output: columns cropped
    ((480, 640), (128, 128)),  # capture taller: rows cropped
    ((640, 480), (160, 90)),  # 4:3 capture, 16:9 output: rows cropped
    ((1280, 720), (224, 224)),
])
def test_intrinsics_for_the_published_size_project_where_the_crop_and_resize_put_pixels(capture_size, output_size):
    width, height = capture_size
    camera_matrix = NATIVE_K.copy()
    camera_matrix[:2, 2] = [width / 2 - 1.7, height / 2 + 1.1]
    rotation = _look_at(np.array([0.85, -0.35, 0.55]), np.array([0.3, 0.0, 0.05]))
    native = CameraModel(camera_matrix, DISTORTION, width, height, rotation, -rotation @ [0.85, -0.35, 0.55])
    points = np.random.default_rng(0).uniform([0.15, -0.25, 0.0], [0.45, 0.25, 0.35], (200, 3))
    published = native.for_output_size(*output_size)
    assert (published.width, published.height) == output_size and np.array_equal(published.distortion, DISTORTION)
    expected = _published_pixels(native.project(points), capture_size, output_size)
    assert np.abs(published.project(points) - expected).max() < 1e-9
    # The same map on Intrinsics, and no change at the calibrated size.
    intrinsics = Intrinsics(camera_matrix, DISTORTION, width, height)
    assert np.allclose(intrinsics.for_output_size(*output_size).camera_matrix, published.camera_matrix, atol=1e-12)
    assert native.for_output_size(width, height) is native


@pytest.mark.parametrize("capture_size", [(640, 480), (480, 640)])
def test_transformed_intrinsics_follow_the_camera_nodes_actual_images(capture_size):
    """A smooth blob drawn at a sub-pixel position in a capture frame, cropped and resized by the
    camera node's own function, has its centroid where the transformed K maps the position."""
    pytest.importorskip("rclpy")
    from parl_robot.nodes.camera_node import crop_and_resize

    width, height = capture_size
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    for centre in ([width * 0.41 + 0.3, height * 0.57 - 0.2], [width * 0.55 - 0.45, height * 0.38 + 0.15]):
        blob = 250 * np.exp(-((columns - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (2 * 9.0 ** 2))
        frame = np.repeat(blob[:, :, None], 3, axis=2).astype(np.float32)
        published = crop_and_resize(frame, 128, 128)[:, :, 0].astype(np.float64)
        out_rows, out_columns = np.mgrid[0:128, 0:128]
        centroid = np.array([(published * out_columns).sum(), (published * out_rows).sum()]) / published.sum()
        transformed = camera_matrix_for_output(np.eye(3), capture_size, (128, 128)) @ [*centre, 1.0]
        assert np.allclose(centroid, transformed[:2], atol=0.02), (centroid, transformed)


def test_detector_on_published_sim_frames_with_a_capture_size_calibration():
    """The sim camera rendered at 640x480, published through crop_and_resize at 128x128, and the
    detector given the 640x480 camera model moved onto the published size: the cup within 1 cm."""
    pytest.importorskip("rclpy")
    from parl_robot.nodes.camera_node import crop_and_resize

    cfg = load_config(task="cup_to_rack")
    world = SimWorld("cup_to_rack", cfg.sim)
    errors = []
    for seed in range(3):
        world.reset(np.random.default_rng(seed), np.asarray(cfg.control.home_xyz), DOWNWARD_ROTATION, distractors=False)
        camera = world.camera_model(640, 480).for_output_size(128, 128)
        image = crop_and_resize(world.render(640, 480)[:, :, ::-1], 128, 128)
        detection = detect_object(image, camera, cfg.perception)
        assert detection is not None
        errors.append(np.linalg.norm(detection.position[:2] - world.object_position("cup")[:2]))
    world.close()
    assert max(errors) < 0.01, errors


class RefusingSimBackend(SimArmBackend):
    """The sim arm, refusing any command within 1 cm of `refused` (as the Interbotix API refuses a pose)."""

    def __init__(self, world, refused):
        super().__init__(world)
        self.refused = np.asarray(refused, float)

    def execute(self, command, duration):
        if np.linalg.norm(command.position - self.refused) < 0.01:
            return False
        return super().execute(command, duration)


def _marker_grabber(world, offset, size=(640, 480)):
    """Sim frames with an ArUco marker (id 0) drawn where the gripper point + offset projects: the
    stand-in for the marker taped to the real gripper."""
    camera = world.camera_model(*size)
    marker = cv2.aruco.generateImageMarker(cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50), 0, 36)
    patch = np.full((48, 48), 255, np.uint8)
    patch[6:42, 6:42] = marker

    def grab_frame():
        frame = world.render(*size)
        centre = camera.project((world.ee_pose()[0] + offset)[None])[0]
        # The patch's centre is at (x0 + 23.5, y0 + 23.5) in pixel-centre coordinates.
        x0, y0 = int(round(centre[0] - 23.5)), int(round(centre[1] - 23.5))
        frame[y0 : y0 + 48, x0 : x0 + 48] = patch[:, :, None]
        return frame

    return grab_frame


def test_collect_in_sim_records_measured_positions_in_the_extrinsics_format(tmp_path):
    cfg = load_config(task="cup_to_rack")
    world = SimWorld("cup_to_rack", cfg.sim)
    world.reset(np.random.default_rng(0), np.asarray(cfg.control.home_xyz), DOWNWARD_ROTATION, distractors=False)
    offset = np.array([0.0, 0.0, 0.03])
    targets = np.vstack([calibration_targets(*PA_RL_BOX, grid=(2, 2, 2)),
                         [[0.62, 0.0, 0.30], [0.30, 0.0, 0.20]]])  # out of reach; refused by the backend
    backend = RefusingSimBackend(world, refused=[0.30, 0.0, 0.20])
    waits = []
    samples_path, results = collect_marker_samples(
        backend, _marker_grabber(world, offset), targets, tmp_path / "samples", offset, wait=waits.append, report=lambda _: None)
    assert [r.status for r in results] == ["recorded"] * 8 + ["unreachable", "refused"]
    assert waits and all(w >= 0 for w in waits)  # it waited for moves and the settle check
    samples = load_extrinsic_samples(samples_path)  # the reader `calibrate extrinsics` uses
    assert len(samples.samples) == 8 and np.allclose(samples.marker_offset, offset)
    for sample, result in zip(samples.samples, results):
        assert isinstance(sample, MarkerSample) and sample.image.is_file()
        assert cv2.imread(str(sample.image)).shape == (480, 640, 3)
        assert np.allclose(sample.ee_xyz, result.measured, atol=1e-5)  # measured, as written ...
        assert np.linalg.norm(sample.ee_xyz - result.target) < 0.005  # ... close to the commanded target
    # Every step commanded a downward gripper; the refused pose left no image behind.
    assert not (tmp_path / "samples" / "sample_009.png").exists()

    # The extrinsics command on these files recovers the sim camera.
    Intrinsics(world.camera_model(640, 480).camera_matrix, np.zeros(5), 640, 480).save(tmp_path / "intrinsics.yaml")
    assert main(["calibrate", "extrinsics", f"samples:={samples_path}", f"intrinsics:={tmp_path / 'intrinsics.yaml'}",
                 f"out:={tmp_path / 'camera.yaml'}"]) == 0
    found, truth = CameraModel.load(tmp_path / "camera.yaml"), world.camera_model(640, 480)
    world.close()
    assert found.reprojection_error_px < 1.0
    assert np.linalg.norm(found.camera_position - truth.camera_position) < 0.03
    assert np.allclose(found.rotation, truth.rotation, atol=0.02)


def test_collect_command_dry_run_on_the_sim_twin(tmp_path, capsys):
    overlay = tmp_path / "box.yaml"
    overlay.write_text(yaml.safe_dump({"control": {"safety_box_low": PA_RL_BOX[0], "safety_box_high": PA_RL_BOX[1]}}))
    assert main(["calibrate", "collect", "sim:=true", f"out:={tmp_path / 'dry'}", f"overlay:={overlay}", "grid:=2x2x2",
                 "marker_offset:=0,0,0.02"]) == 0
    printed = capsys.readouterr().out
    assert "recorded 8/8 poses" in printed and "sim dry run" in printed
    samples = load_extrinsic_samples(tmp_path / "dry" / "samples.yaml")
    assert len(samples.samples) == 8 and np.allclose(samples.marker_offset, [0, 0, 0.02])
    heights = {round(float(s.ee_xyz[2]), 2) for s in samples.samples}
    assert len(heights) == 2  # two layers: the points are not coplanar
    assert main(["calibrate", "collect", "sim:=true", f"out:={tmp_path / 'x'}", "grid:=2x2"]) == 1
    assert "grid:=2x2 must be 3 positive integers" in capsys.readouterr().out
    assert main(["calibrate", "collect", "sim:=true", f"out:={tmp_path / 'x'}", "speed:=3"]) == 1
    assert "unknown argument(s) ['speed']" in capsys.readouterr().out


def test_calibration_targets_cover_the_box_in_a_serpentine():
    targets = calibration_targets([0.2, -0.2, 0.1], [0.4, 0.2, 0.3], grid=(3, 3, 2), margin_m=0.02)
    assert targets.shape == (18, 3)
    assert np.allclose(targets.min(0), [0.22, -0.18, 0.12]) and np.allclose(targets.max(0), [0.38, 0.18, 0.28])
    steps = np.diff(targets, axis=0)
    # Serpentine: each target is one grid step from the previous one, along one axis.
    assert np.all((np.abs(steps) > 1e-9).sum(axis=1) == 1) and np.abs(steps).max() <= 0.18 + 1e-9


def test_workspace_check_on_a_box_reaching_too_far():
    low, high, reports = propose_reachable_box([0.25, -0.15, 0.06], [0.65, 0.15, 0.25], grid=(5, 5, 4))
    first = reports[0]
    failing = first.unreachable()
    assert failing and all(point[0] >= 0.45 for point, _ in failing)  # only the far end fails
    assert first.reachable_points[first.axes[0] <= 0.35].all()  # the near part is reachable at every yaw
    assert "fails at yaw" in first.table()
    assert np.allclose(low, [0.25, -0.15, 0.06]) and np.allclose(high[1:], [0.15, 0.25])  # only x_high moved
    assert 0.35 < high[0] < 0.45
    assert reports[-1].all_reachable and np.allclose(reports[-1].box_high, high)
    for corner in np.stack(np.meshgrid(*zip(low, high), indexing="ij"), -1).reshape(-1, 3):
        for yaw in (0.0, -0.5, 0.5):
            assert solve_ik(pose_matrix(corner, grasp_rotation(yaw)))[1], corner


def test_workspace_check_on_the_default_box():
    cfg = load_config(task="cup_to_rack")
    report = check_workspace(cfg.control.safety_box_low, cfg.control.safety_box_high)
    ok = report.reachable_points  # (5, 5, 4)
    # Straight down at z = 0.35 m puts the wrist 0.51 m up: out of reach anywhere in the box.
    assert not ok[:, :, -1].any()
    # The table-level centre of the box is reachable at every yaw; so is the home pose.
    assert ok[1:4, 1:4, :2].all()
    assert check_workspace(cfg.control.home_xyz, np.asarray(cfg.control.home_xyz) + 1e-3, grid=(1, 1, 1)).all_reachable


def test_reach_shortcut_never_rejects_a_pose_the_ik_accepts():
    """Just outside the shortcut's reach (the only place it could be wrong) the IK finds nothing
    either, while just inside it the IK still succeeds: the shortcut skips only hopeless solves."""
    from parl_robot.robot import workspace

    rng = np.random.default_rng(2)
    for excess, expect_some_solved in ((0.0051, False), (-0.003, True)):
        solved = []
        for heading, elevation in rng.uniform([-0.5, 0.0], [0.5, 1.0], (12, 2)):
            reach = workspace._ARM_REACH_M + excess
            wrist = workspace._SHOULDER + reach * np.array([np.cos(elevation) * np.cos(heading), np.cos(elevation) * np.sin(heading),
                                                            np.sin(elevation)])
            point = wrist - [0.0, 0.0, workspace._WRIST_TO_GRIPPER_M]
            assert beyond_reach(point) == (excess > 0)
            solved.append(solve_ik(pose_matrix(point, DOWNWARD_ROTATION))[1])
        assert any(solved) == expect_some_solved, (excess, solved)


def test_workspace_command_reports_trims_and_writes_the_overlay(tmp_path, capsys):
    overlay = tmp_path / "cup_to_rack.yaml"
    overlay.write_text(yaml.safe_dump({"reward": {"target_low": [0.25, 0.05, 0.02], "target_high": [0.37, 0.17, 0.2]},
                                       "control": {"safety_box_low": [0.25, -0.15, 0.06], "safety_box_high": [0.6, 0.15, 0.25]}}))
    args = ["calibrate", "workspace", "task:=cup_to_rack", f"overlay:={overlay}", "grid:=4x3x2"]
    assert main(args) == 1  # unreachable points, nothing written
    printed = capsys.readouterr().out
    assert "fails at yaw" in printed and "proposed reachable box" in printed and "trim:=true" in printed
    assert load_config(task="cup_to_rack", overlays=[overlay]).control.safety_box_high == [0.6, 0.15, 0.25]
    assert main(args + ["trim:=true"]) == 0
    assert "trimmed box written" in capsys.readouterr().out
    trimmed = load_config(task="cup_to_rack", overlays=[overlay])
    assert trimmed.control.safety_box_low == [0.25, -0.15, 0.06] and 0.35 < trimmed.control.safety_box_high[0] < 0.6
    assert trimmed.reward.target_high == [0.37, 0.17, 0.2]  # the rest of the overlay is kept
    assert main(args) == 0
    assert "the whole safety box is reachable" in capsys.readouterr().out


def test_task_command_writes_the_overlay_and_checks_its_box(tmp_path, capsys):
    points = tmp_path / "points.yaml"
    points.write_text(yaml.safe_dump({"target": [[0.26, 0.06, 0.03], [0.36, 0.16, 0.15]],
                                      "workspace": [[0.22, -0.15, 0.05], [0.36, 0.15, 0.28]]}))
    out = tmp_path / "tasks" / "cup_to_rack.yaml"
    args = ["calibrate", "task", "task:=cup_to_rack", f"points:={points}", f"out:={out}", "grid:=3x3x2"]
    assert main(args) == 1  # the overlay is written, but its far top corners are out of reach
    printed = capsys.readouterr().out
    assert "16/18 grid points reachable" in printed and "0.360   0.150   0.280" in printed
    assert load_config(task="cup_to_rack", overlays=[out]).control.safety_box_high == [0.36, 0.15, 0.28]
    assert main(args + ["trim:=true"]) == 0
    trimmed = load_config(task="cup_to_rack", overlays=[out])
    assert trimmed.control.safety_box_low == [0.22, -0.15, 0.05] and trimmed.reward.target_low == [0.25, 0.05, 0.02]
    high = trimmed.control.safety_box_high
    assert 0.33 < high[0] < 0.36 and high[1:] == [0.15, 0.28]  # only the far face moved in


def test_writing_a_box_that_breaks_the_config_is_refused(tmp_path):
    overlay = tmp_path / "o.yaml"
    with pytest.raises(ConfigError, match="safety_box_low"):
        write_safety_box(overlay, "cup_to_rack", np.array([0.3, 0.0, 0.1]), np.array([0.2, 0.1, 0.2]))
    assert not overlay.exists()


def test_loaders_name_the_file_and_key(tmp_path):
    bad = tmp_path / "samples.yaml"
    bad.write_text(yaml.safe_dump({"samples": [{"image": "a.png", "ee_xyz": [0.1, 0.2, 0.3]}, {"image": "b.png", "ee": [0, 0, 0]}]}))
    with pytest.raises(CalibrationError, match=r"samples\.yaml samples\[1\]: keys \['ee', 'image'\]"):
        load_extrinsic_samples(bad)
    bad.write_text(yaml.safe_dump({"samples": [{"pixel": [1, 2], "point": [0.1, 0.2]}]}))
    with pytest.raises(CalibrationError, match=r"samples\[0\]: 'point' must be finite numbers with shape \(3,\)"):
        load_extrinsic_samples(bad)
    bad.write_text(yaml.safe_dump({"samples": [], "offset": [0, 0, 0]}))
    with pytest.raises(CalibrationError, match=r"unknown key\(s\) \['offset'\]"):
        load_extrinsic_samples(bad)
    intrinsics = tmp_path / "intrinsics.yaml"
    intrinsics.write_text(yaml.safe_dump({"image_width": 640, "image_height": 480, "camera_matrix": np.eye(3).tolist()}))
    with pytest.raises(CalibrationError, match=r"intrinsics\.yaml: missing key 'distortion'"):
        Intrinsics.load(intrinsics)
    intrinsics.write_text(yaml.safe_dump({"image_width": 64.5, "image_height": 480}))
    with pytest.raises(CalibrationError, match="'image_width' must be a positive integer"):
        Intrinsics.load(intrinsics)
    points = tmp_path / "points.yaml"
    points.write_text(yaml.safe_dump({"target": [[0, 0, 0], [1, 1, 1]]}))
    with pytest.raises(CalibrationError, match=r"points\.yaml: missing key 'workspace'"):
        load_task_points(points)
    with pytest.raises(CalibrationError, match="cannot read pose list"):
        load_pose_list(tmp_path / "missing.yaml")


def test_extrinsics_rejects_samples_at_another_size_than_the_intrinsics(tmp_path, capsys):
    Intrinsics(NATIVE_K, np.zeros(5), 640, 480).save(tmp_path / "intrinsics.yaml")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((128, 128, 3), np.uint8))
    ExtrinsicSamples([MarkerSample(tmp_path / "small.png", np.zeros(3))], np.zeros(3)).save(tmp_path / "samples.yaml")
    assert main(["calibrate", "extrinsics", f"samples:={tmp_path / 'samples.yaml'}",
                 f"intrinsics:={tmp_path / 'intrinsics.yaml'}", f"out:={tmp_path / 'camera.yaml'}"]) == 1
    assert "small.png is 128x128 but the intrinsics" in capsys.readouterr().out


# ----- calibration/examples -------------------------------------------------------------------
EXAMPLES = REPO_ROOT / "calibration" / "examples"
LOADERS = {
    "intrinsics.yaml": Intrinsics.load,
    "camera.yaml": CameraModel.load,
    "samples/samples.yaml": load_extrinsic_samples,
    "poses.yaml": load_pose_list,
    "points_cup_to_rack.yaml": load_task_points,
    "tasks/cup_to_rack.yaml": lambda path: load_config(task="cup_to_rack", overlays=[path]),
}


def test_every_example_file_loads_with_the_projects_loaders():
    files = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}
    assert files == set(LOADERS), f"an example without a loader check (or a missing one): {files ^ set(LOADERS)}"
    loaded = {name: load(EXAMPLES / name) for name, load in LOADERS.items()}
    intrinsics, camera = loaded["intrinsics.yaml"], loaded["camera.yaml"]
    assert np.allclose(intrinsics.camera_matrix, camera.camera_matrix) and (intrinsics.width, intrinsics.height) == (camera.width, camera.height)
    # The example camera sees the example samples' marker positions inside its image.
    samples = loaded["samples/samples.yaml"]
    pixels = camera.project(np.array([s.ee_xyz + samples.marker_offset for s in samples.samples]))
    assert np.all((pixels >= 0) & (pixels < [camera.width, camera.height]))
    assert all(s.image.name.startswith("sample_") and s.image.suffix == ".png" for s in samples.samples)
    # The example overlay's box is what `calibrate workspace` accepts.
    overlay = loaded["tasks/cup_to_rack.yaml"]
    assert check_workspace(overlay.control.safety_box_low, overlay.control.safety_box_high, grid=(3, 3, 2)).all_reachable
    assert (Path(EXAMPLES.parent) / "README.md").is_file()


def test_object_detector_node_uses_the_calibration_at_the_published_size(monkeypatch):
    """The node loads a capture-size camera.yaml (640x480) and detects on the task's 128x128 images."""
    import json
    import os

    rclpy = pytest.importorskip("rclpy")
    from parl_robot.nodes.object_detector_node import ObjectDetectorNode

    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    overrides = json.dumps({"perception.calibration_file": str(EXAMPLES / "camera.yaml")})
    rclpy.init(args=["--ros-args", "-p", f"overrides:='{overrides}'"])
    try:
        node = ObjectDetectorNode()
        expected = CameraModel.load(EXAMPLES / "camera.yaml").for_output_size(128, 128)
        assert (node.camera.width, node.camera.height) == (128, 128)
        assert np.allclose(node.camera.camera_matrix, expected.camera_matrix)
        node.destroy_node()
    finally:
        rclpy.shutdown()
