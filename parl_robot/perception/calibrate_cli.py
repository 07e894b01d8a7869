"""`parl-robot calibrate ...`: the calibration tool for the real camera and workspace.

    parl-robot calibrate intrinsics images:=DIR [board:=9x6] [square:=0.025] [out:=calibration/intrinsics.yaml]
    parl-robot calibrate extrinsics samples:=FILE [intrinsics:=calibration/intrinsics.yaml]
                                    [marker_id:=0] [out:=calibration/camera.yaml]
    parl-robot calibrate task task:=cup_to_rack points:=FILE [out:=calibration/tasks/<task>.yaml]

Intrinsics: 10-20 photos of a printed chessboard (count inner corners) from the camera at the
resolution the camera node publishes. Extrinsics: a YAML list of samples, each either
`{image: path, ee_xyz: [x, y, z]}` (an ArUco marker on the gripper, at the end-effector position the
driver reports; `marker_offset: [dx, dy, dz]` at the top level adds the marker's offset from that
point) or `{pixel: [u, v], point: [x, y, z]}` (a touched point clicked in an image). Use at least 6
positions spread over the workspace and over heights. Task: a YAML with `target: [[x, y, z], ...]`
(corners of the target region, touched with the gripper) and `workspace: [[x, y, z], ...]` (corners
of the space the arm may use); the output is a config overlay: `overlay:=calibration/tasks/<task>.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from parl_robot.perception.calibration import (
    CalibrationError, CameraModel, calibrate_extrinsics, calibrate_intrinsics, find_aruco_centre, task_workspace_overlay,
    write_yaml_atomic,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CalibrationError(f"cannot read image {path}")
    return image[:, :, ::-1].copy()


def intrinsics(args: dict[str, str]) -> str:
    directory = Path(args["images"])
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if directory.is_dir() else []
    if not paths:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    cols, rows = (int(v) for v in args.get("board", "9x6").lower().split("x"))
    images = [_read_image(p) for p in paths]
    camera_matrix, distortion, rms, used = calibrate_intrinsics(images, (cols, rows), float(args.get("square", "0.025")))
    height, width = images[0].shape[:2]
    out = write_yaml_atomic(
        Path(args.get("out", "calibration/intrinsics.yaml")),
        {"image_width": width, "image_height": height, "camera_matrix": np.round(camera_matrix, 6).tolist(),
         "distortion": np.round(distortion, 8).tolist(), "reprojection_error_px": round(rms, 4), "views": used},
        "parl_robot camera intrinsics (chessboard)",
    )
    return f"intrinsics from {used}/{len(paths)} views, RMS reprojection error {rms:.3f} px -> {out}"


def extrinsics(args: dict[str, str]) -> str:
    intrinsics_data = yaml.safe_load(Path(args.get("intrinsics", "calibration/intrinsics.yaml")).read_text())
    camera_matrix = np.asarray(intrinsics_data["camera_matrix"], float)
    distortion = np.asarray(intrinsics_data["distortion"], float)
    samples_path = Path(args["samples"])
    document = yaml.safe_load(samples_path.read_text())
    samples = document["samples"] if isinstance(document, dict) else document
    offset = np.asarray(document.get("marker_offset", [0, 0, 0]) if isinstance(document, dict) else [0, 0, 0], float)
    marker_id = int(args.get("marker_id", "0"))
    points, pixels, skipped = [], [], []
    for index, sample in enumerate(samples):
        if "pixel" in sample:
            pixels.append(np.asarray(sample["pixel"], float))
            points.append(np.asarray(sample["point"], float))
            continue
        image_path = (samples_path.parent / sample["image"]).resolve()
        centre = find_aruco_centre(_read_image(image_path), marker_id)
        if centre is None:
            skipped.append(str(image_path))
            continue
        pixels.append(centre)
        points.append(np.asarray(sample["ee_xyz"], float) + offset)
    rotation, translation, error = calibrate_extrinsics(np.array(points), np.array(pixels), camera_matrix, distortion)
    model = CameraModel(camera_matrix, distortion, int(intrinsics_data["image_width"]), int(intrinsics_data["image_height"]),
                        rotation, translation, error)
    out = model.save(Path(args.get("out", "calibration/camera.yaml")))
    note = f"; marker {marker_id} not found in {len(skipped)} image(s): {skipped}" if skipped else ""
    return (f"camera at {np.round(model.camera_position, 3).tolist()} m (robot frame) from {len(points)} points, "
            f"RMS reprojection error {error:.3f} px -> {out}{note}")


def task(args: dict[str, str]) -> str:
    name = args["task"]
    document = yaml.safe_load(Path(args["points"]).read_text())
    overlay = task_workspace_overlay(document["target"], document["workspace"])
    out = write_yaml_atomic(Path(args.get("out", f"calibration/tasks/{name}.yaml")), overlay,
                      f"{name}: target region and safety box touched on the real setup (config overlay)")
    return f"target {overlay['reward']} and safety box {overlay['control']} -> {out}"


COMMANDS = {"intrinsics": intrinsics, "extrinsics": extrinsics, "task": task}


def main(argv: list[str], parse_assignments) -> int:
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"error: parl-robot calibrate {{{','.join(COMMANDS)}}} name:=value ... (see `--help`)\n{__doc__}")
    try:
        print(COMMANDS[argv[0]](parse_assignments(argv[1:])))
    except (CalibrationError, KeyError, OSError, ValueError, yaml.YAMLError) as err:
        detail = f"missing argument or key {err}" if isinstance(err, KeyError) else str(err)
        print(f"calibration failed: {detail}")
        return 1
    return 0
