"""`parl-robot calibrate ...`: the calibration tool for the real camera and workspace. The procedure,
file formats and examples are in calibration/README.md.

    parl-robot calibrate capture out:=DIR [count:=15] [board:=9x6] [interval:=2.0] [device:=0] [width:=640] [height:=480]
    parl-robot calibrate intrinsics images:=DIR [board:=9x6] [square:=0.025] [out:=calibration/intrinsics.yaml] [task:=cup_to_rack]
    parl-robot calibrate collect out:=DIR [grid:=3x3x2 | poses:=FILE] [margin:=0.03] [marker_offset:=0,0,0]
        [task:=cup_to_rack] [overlay:=FILE] [sim:=false] [robot_model:=wx250s] [moving_time:=0.5]
        [settle:=0.5] [gripper:=closed] [device:=0] [width:=640] [height:=480]
    parl-robot calibrate extrinsics samples:=FILE [intrinsics:=calibration/intrinsics.yaml] [marker_id:=0]
        [dictionary:=DICT_4X4_50] [out:=calibration/camera.yaml] [task:=cup_to_rack]
    parl-robot calibrate task task:=cup_to_rack points:=FILE [out:=calibration/tasks/<task>.yaml]
        [grid:=5x5x4] [yaw:=0.5] [trim:=false]
    parl-robot calibrate workspace [task:=cup_to_rack] [overlay:=FILE] [grid:=5x5x4] [yaw:=0.5] [trim:=false]

capture: full-resolution chessboard frames from the camera (the capture size the camera node
requests). intrinsics: K and distortion at that size. collect: moves the arm (or, with sim:=true,
the MuJoCo twin) over a grid in the safety box and records frames + measured gripper positions.
extrinsics: the camera pose from the marker on the gripper in those frames (or from
`{pixel, point}` pairs). task: the target region and safety box from touched points, then the
workspace check. workspace: is the safety box reachable with the downward grasp (IK of the
Interbotix API, yaw 0 and ±yaw)? Prints the unreachable grid points and a trimmed box; trim:=true
writes that box into the task overlay. The overlay (calibration/tasks/<task>.yaml) is used by
default when it exists, and is passed to the graph as `overlay:=calibration/tasks/<task>.yaml`.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from parl_robot.config import ConfigError, TaskConfig, load_config
from parl_robot.perception.calibration import (
    CalibrationError, CameraModel, Intrinsics, MarkerSample, calibrate_extrinsics, calibrate_intrinsics,
    find_aruco_centre, load_extrinsic_samples, load_task_points, read_yaml_mapping, task_workspace_overlay,
    write_yaml_atomic,
)
from parl_robot.perception.calibration_capture import (
    calibration_targets, capture_board_images, collect_marker_samples, load_pose_list, results_table,
)
from parl_robot.robot.arm_controller import neutral_joints
from parl_robot.robot.safety import DOWNWARD_ROTATION
from parl_robot.robot.workspace import (
    DEFAULT_YAW_BOUND_RAD, WorkspaceError, WorkspaceReport, check_yaws, propose_reachable_box, reachable_at,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CAPTURE_WIDTH, CAPTURE_HEIGHT = 640, 480  # the camera node's default capture size
STALE_FRAMES = 4  # V4L2 queues 4 buffers: drop them so the frame is taken after the arm settled
CAMERA_KEYS = {"device", "width", "height"}
CONFIG_KEYS = {"task", "overlay"}


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CalibrationError(f"cannot read image {path}")
    return image[:, :, ::-1].copy()


def _size(text: str, count: int, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) != count or min(values) < 1:
        raise CalibrationError(f"{name}:={text} must be {count} positive integers joined by 'x', e.g. {'x'.join(['3'] * count)}")
    return values


def _flag(args: dict[str, str], name: str) -> bool:
    value = args.get(name, "false").lower()
    if value not in ("true", "false"):
        raise CalibrationError(f"{name}:={args[name]} must be true or false")
    return value == "true"


def default_overlay(task: str) -> Path:
    return Path("calibration") / "tasks" / f"{task}.yaml"


def _task_config(args: dict[str, str]) -> tuple[TaskConfig, Path | None]:
    """The task config with its calibration overlay: `overlay:=`, else calibration/tasks/<task>.yaml if present."""
    task = args.get("task", "cup_to_rack")
    overlay = Path(args["overlay"]) if args.get("overlay") else default_overlay(task)
    if not overlay.is_file():
        if args.get("overlay"):
            raise CalibrationError(f"overlay {overlay} not found")
        overlay = None
    return load_config(task=task, overlays=[overlay] if overlay else []), overlay


def _published_k(model, cfg: TaskConfig) -> str:
    published = model.for_output_size(cfg.sim.camera_width, cfg.sim.camera_height)
    k = published.camera_matrix
    return (f"published {published.width}x{published.height} (task {cfg.task.name}, centre crop + resize): "
            f"fx {k[0, 0]:.2f} fy {k[1, 1]:.2f} cx {k[0, 2]:.2f} cy {k[1, 2]:.2f}")


def _camera(args: dict[str, str]):
    """(grab_frame, release) for the USB camera at its capture size, as the camera node opens it."""
    from parl_robot.perception.frame_grabber import open_capture

    device = args.get("device", "0")
    capture = open_capture(device, int(args.get("width", CAPTURE_WIDTH)), int(args.get("height", CAPTURE_HEIGHT)), 30.0)

    def grab_frame() -> np.ndarray:
        for _ in range(STALE_FRAMES):
            capture.grab()
        ok, frame = capture.read()
        if not ok or frame is None:
            raise CalibrationError(f"camera '{device}' returned no frame")
        return frame[:, :, ::-1].copy()

    return grab_frame, capture.release


# ----- commands -------------------------------------------------------------------------------
def capture(args: dict[str, str]) -> tuple[str, int]:
    count = int(args.get("count", "15"))
    board = _size(args.get("board", "9x6"), 2, "board")
    grab_frame, release = _camera(args)
    try:
        saved = capture_board_images(grab_frame, Path(args["out"]), count, board, float(args.get("interval", "2.0")))
    finally:
        release()
    return f"{len(saved)}/{count} chessboard frames in {args['out']}; next: parl-robot calibrate intrinsics images:={args['out']}", int(len(saved) < count)


def intrinsics(args: dict[str, str]) -> tuple[str, int]:
    directory = Path(args["images"])
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if directory.is_dir() else []
    if not paths:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    board = _size(args.get("board", "9x6"), 2, "board")
    images = [_read_image(p) for p in paths]
    height, width = images[0].shape[:2]
    for path, image in zip(paths, images):
        if image.shape[:2] != (height, width):
            raise CalibrationError(f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is {width}x{height}: "
                                   "take every view at the camera's capture size")
    camera_matrix, distortion, rms, used = calibrate_intrinsics(images, board, float(args.get("square", "0.025")))
    model = Intrinsics(camera_matrix, distortion, width, height, rms, used)
    out = model.save(Path(args.get("out", "calibration/intrinsics.yaml")))
    cfg = load_config(task=args.get("task", "cup_to_rack"))
    return (f"intrinsics from {used}/{len(paths)} views at {width}x{height}, RMS reprojection error {rms:.3f} px -> {out}\n"
            f"  fx {camera_matrix[0, 0]:.2f} fy {camera_matrix[1, 1]:.2f} cx {camera_matrix[0, 2]:.2f} cy {camera_matrix[1, 2]:.2f}; "
            f"{_published_k(model, cfg)}"), 0


def collect(args: dict[str, str]) -> tuple[str, int]:
    cfg, overlay = _task_config(args)
    box_low, box_high = np.asarray(cfg.control.safety_box_low), np.asarray(cfg.control.safety_box_high)
    if args.get("poses"):
        targets = load_pose_list(args["poses"])
    else:
        targets = calibration_targets(box_low, box_high, _size(args.get("grid", "3x3x2"), 3, "grid"), float(args.get("margin", "0.03")))
    offset = np.array([float(v) for v in args.get("marker_offset", "0,0,0").split(",")])
    if offset.shape != (3,):
        raise CalibrationError(f"marker_offset:={args['marker_offset']} must be dx,dy,dz in metres")
    gripper = args.get("gripper", "closed")
    if gripper not in ("open", "closed"):
        raise CalibrationError(f"gripper:={gripper} must be open or closed")
    home = np.asarray(cfg.control.home_xyz, float)
    width, height = int(args.get("width", CAPTURE_WIDTH)), int(args.get("height", CAPTURE_HEIGHT))
    sim = _flag(args, "sim")
    if sim:
        from parl_robot.robot.backend import SimArmBackend
        from parl_robot.sim.world import SimWorld

        world = SimWorld(cfg.task.name, cfg.sim)
        world.reset(np.random.default_rng(cfg.sim.seed), home, DOWNWARD_ROTATION, distractors=False)
        backend = SimArmBackend(world)

        def grab_frame() -> np.ndarray:
            return world.render(width, height)

        def wait(seconds: float) -> None:
            """Sim time advances inside `execute`: nothing to wait for."""

        release = world.close
    else:
        import rclpy  # the Interbotix API builds its node in this process's rclpy context

        from parl_robot.robot.backend import InterbotixArmBackend

        rclpy.init()
        backend = InterbotixArmBackend(robot_model=args.get("robot_model", "wx250s"), moving_time=float(args.get("moving_time", "0.5")),
                                       home_joint_speed=cfg.control.home_joint_speed_rad_s)
        grab_frame, release = _camera(args)
        wait = time.sleep
    neutral = neutral_joints(cfg.control)
    try:
        backend.go_home(neutral, home[2])
        samples_path, results = collect_marker_samples(
            backend, grab_frame, targets, Path(args["out"]), offset, gripper_open=gripper == "open",
            move_time_s=float(args.get("moving_time", "0.5")), settle_s=float(args.get("settle", "0.5")), wait=wait,
        )
        park = getattr(backend, "park", None)  # the hardware backend: lift, neutral, sleep pose
        if park is not None:
            park(neutral, home[2])
        else:
            backend.go_home(neutral, home[2])
    finally:
        release()
        close = getattr(backend, "close", None)  # the hardware backend shuts the Interbotix API down
        if close is not None:
            close()
    recorded = sum(r.status == "recorded" for r in results)
    lines = [f"box {box_low.tolist()}..{box_high.tolist()} (task {cfg.task.name}{f', overlay {overlay}' if overlay else ''})",
             results_table(results), f"recorded {recorded}/{len(results)} poses"
             + (f" -> {samples_path}; next: parl-robot calibrate extrinsics samples:={samples_path}" if recorded else "")]
    if recorded < 6:
        lines.append("too few samples for the extrinsics (need 6 at two heights or more): check the box and the arm")
    if sim:
        lines.append("sim dry run: the rendered frames show no marker, so extrinsics cannot run on them")
    return "\n".join(lines), int(recorded < 6)


def extrinsics(args: dict[str, str]) -> tuple[str, int]:
    intrinsics_path = Path(args.get("intrinsics", "calibration/intrinsics.yaml"))
    camera = Intrinsics.load(intrinsics_path)
    document = load_extrinsic_samples(args["samples"])
    marker_id = int(args.get("marker_id", "0"))
    dictionary = args.get("dictionary", "DICT_4X4_50")
    if not dictionary.startswith("DICT_") or not hasattr(cv2.aruco, dictionary):
        raise CalibrationError(f"dictionary:={dictionary} is not an OpenCV ArUco dictionary (e.g. DICT_4X4_50)")
    points, pixels, skipped = [], [], []
    for sample in document.samples:
        if not isinstance(sample, MarkerSample):
            pixels.append(sample.pixel)
            points.append(sample.point)
            continue
        image = _read_image(sample.image)
        if image.shape[:2] != (camera.height, camera.width):
            raise CalibrationError(f"{sample.image} is {image.shape[1]}x{image.shape[0]} but the intrinsics {intrinsics_path} are for "
                                   f"{camera.width}x{camera.height}: record the samples at the camera's capture size")
        centre = find_aruco_centre(image, marker_id, dictionary)
        if centre is None:
            skipped.append(sample.image.name)
            continue
        pixels.append(centre)
        points.append(sample.ee_xyz + document.marker_offset)
    rotation, translation, error = calibrate_extrinsics(np.array(points), np.array(pixels), camera.camera_matrix, camera.distortion)
    model = CameraModel(camera.camera_matrix, camera.distortion, camera.width, camera.height, rotation, translation, error)
    out = model.save(Path(args.get("out", "calibration/camera.yaml")))
    residuals = np.linalg.norm(model.project(np.array(points)) - np.array(pixels), axis=1)
    worst = np.argsort(residuals)[::-1][:3]
    lines = [f"camera at {np.round(model.camera_position, 3).tolist()} m (robot frame) from {len(points)} points, "
             f"RMS reprojection error {error:.3f} px at {camera.width}x{camera.height} -> {out}",
             "  largest residuals: " + ", ".join(f"point {np.round(points[i], 3).tolist()} {residuals[i]:.2f} px" for i in worst),
             f"  {_published_k(model, load_config(task=args.get('task', 'cup_to_rack')))}"]
    if skipped:
        lines.append(f"  marker {marker_id} ({dictionary}) not found in {len(skipped)} image(s): {', '.join(skipped)}")
    return "\n".join(lines), 0


def write_safety_box(overlay: Path, task: str, low: np.ndarray, high: np.ndarray) -> Path:
    """Set control.safety_box_low/high in the task overlay (created if missing), keeping its other keys."""
    data = read_yaml_mapping(overlay, "task overlay") if overlay.is_file() else {}
    control = data.setdefault("control", {})
    if not isinstance(control, dict):
        raise CalibrationError(f"{overlay}: 'control' must be a mapping, got {control!r}")
    control["safety_box_low"] = [round(float(v), 3) for v in low]
    control["safety_box_high"] = [round(float(v), 3) for v in high]
    load_config(task=task, overlays=[overlay] if overlay.is_file() else [],  # the result must be a valid config
                overrides={"control.safety_box_low": control["safety_box_low"], "control.safety_box_high": control["safety_box_high"]})
    return write_yaml_atomic(overlay, data, f"{task}: calibrated target region and safety box (config overlay; "
                                            "safety box checked reachable by `parl-robot calibrate workspace`)")


def workspace_report(cfg: TaskConfig, box_low, box_high, args: dict[str, str], overlay: Path) -> tuple[list[str], int]:
    """The reachability check of a box, its trimmed proposal, and (trim:=true) the proposal written."""
    grid = _size(args.get("grid", "5x5x4"), 3, "grid")
    yaws = check_yaws(float(args.get("yaw", DEFAULT_YAW_BOUND_RAD)))
    try:
        low, high, reports = propose_reachable_box(box_low, box_high, grid, yaws)
    except WorkspaceError as err:
        return [f"workspace check on a {'x'.join(map(str, grid))} grid: {err}"], 1
    first: WorkspaceReport = reports[0]
    # Round the proposal inward to millimetres, so the written box lies inside the checked one.
    low, high = np.ceil(np.round(low * 1000, 6)) / 1000, np.floor(np.round(high * 1000, 6)) / 1000
    home = np.asarray(cfg.control.home_xyz, float)
    home_ok = bool(reachable_at(home[None], yaws)[0].all())
    lines = [f"workspace check of box {np.round(first.box_low, 3).tolist()}..{np.round(first.box_high, 3).tolist()} "
             f"on a {'x'.join(map(str, grid))} grid (corners included), downward grasp:", first.table(),
             f"home {home.tolist()}: {'reachable' if home_ok else 'NOT reachable'} at every checked yaw"]
    if first.all_reachable:
        lines.append("the whole safety box is reachable")
        return lines, int(not home_ok)
    inside = bool(np.all(home >= low) and np.all(home <= high))
    lines.append(f"proposed reachable box: safety_box_low {low.tolist()} safety_box_high {high.tolist()} "
                 f"({reports[-1].reachable_points.size} grid points all reachable; home {'inside' if inside else 'OUTSIDE'})")
    if _flag(args, "trim"):
        lines.append(f"trimmed box written -> {write_safety_box(overlay, cfg.task.name, low, high)}")
        return lines, int(not home_ok)
    lines.append(f"not written: rerun with trim:=true to write it into {overlay}, or edit the box yourself")
    return lines, 1


def task(args: dict[str, str]) -> tuple[str, int]:
    name = args["task"]
    target, workspace_points = load_task_points(args["points"])
    overlay = task_workspace_overlay(target, workspace_points)
    out = write_yaml_atomic(Path(args.get("out", default_overlay(name))), overlay,
                            f"{name}: target region and safety box touched on the real setup (config overlay)")
    cfg = load_config(task=name, overlays=[out])
    lines, code = workspace_report(cfg, cfg.control.safety_box_low, cfg.control.safety_box_high, args, out)
    return "\n".join([f"target {overlay['reward']} and safety box {overlay['control']} -> {out}", *lines]), code


def workspace(args: dict[str, str]) -> tuple[str, int]:
    cfg, overlay = _task_config(args)
    source = f"task {cfg.task.name}" + (f" + overlay {overlay}" if overlay else " (no overlay)")
    lines, code = workspace_report(cfg, cfg.control.safety_box_low, cfg.control.safety_box_high, args,
                                   overlay or default_overlay(cfg.task.name))
    return "\n".join([f"safety box of {source}", *lines]), code


COMMANDS = {
    "capture": (capture, {"out", "count", "board", "interval"} | CAMERA_KEYS),
    "intrinsics": (intrinsics, {"images", "board", "square", "out", "task"}),
    "collect": (collect, {"out", "grid", "poses", "margin", "marker_offset", "sim", "robot_model", "moving_time", "settle",
                          "gripper"} | CAMERA_KEYS | CONFIG_KEYS),
    "extrinsics": (extrinsics, {"samples", "intrinsics", "marker_id", "dictionary", "out", "task"}),
    "task": (task, {"task", "points", "out", "grid", "yaw", "trim"}),
    "workspace": (workspace, {"grid", "yaw", "trim"} | CONFIG_KEYS),
}


def main(argv: list[str], parse_assignments) -> int:
    if not argv or argv[0] in ("-h", "--help", "help") or (len(argv) > 1 and argv[1] in ("-h", "--help")):
        print(__doc__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: parl-robot calibrate {{{','.join(COMMANDS)}}} name:=value ... (`parl-robot calibrate --help`)")
        return 2
    command, known = COMMANDS[argv[0]]
    try:
        args = parse_assignments(argv[1:])
        unknown = sorted(set(args) - known)
        if unknown:
            raise CalibrationError(f"unknown argument(s) {unknown} for `calibrate {argv[0]}` (known: {', '.join(sorted(known))})")
        text, code = command(args)
    except (CalibrationError, ConfigError, KeyError, OSError, ValueError, yaml.YAMLError) as err:
        detail = f"missing argument {err}" if isinstance(err, KeyError) else str(err)
        print(f"calibration failed: {detail}")
        return 1
    print(text)
    return code
