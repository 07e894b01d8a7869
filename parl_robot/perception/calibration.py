"""Camera calibration for the real setup: intrinsics from chessboard views, camera->robot extrinsics
from an ArUco marker on the gripper (or touched points) seen at known end-effector positions, and
the per-task workspace file (target region + safety box) from touched corner points.

Frames: the robot base frame of the Interbotix driver (x forward, z up, metres); the OpenCV camera
frame (x right, y down, z forward); pixel (0, 0) is the centre of the top-left pixel. `CameraModel.project`
maps robot points to pixels and `CameraModel.pixel_to_plane` maps a pixel back onto a horizontal
plane z = h in the robot frame, which is how the object detector turns a blob centroid into an
object position.

Sizes: intrinsics and extrinsics are computed on full frames at the camera's capture size (e.g.
640x480), where the chessboard and marker are sharpest. The camera node publishes a centre crop to
the policy's aspect ratio resized to `sim.camera_width x camera_height`; `for_output_size` moves a
model onto those published pixels (the crop shifts the principal point, the resize scales K; the
distortion coefficients act on normalized coordinates and stay as they are).

Files (examples in calibration/examples/): intrinsics.yaml (`Intrinsics`), camera.yaml
(`CameraModel`), the extrinsics samples file (`load_extrinsic_samples`), the touched task points
(`load_task_points`); the task overlay is a config overlay read by `parl_robot.config.load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import yaml


class CalibrationError(ValueError):
    pass


def write_yaml_atomic(path: str | Path, data: dict, header: str) -> Path:
    """Write `data` as YAML under a `# header` line: to a temporary file, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(f"# {header}\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    temporary.replace(path)
    return path


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The top-level mapping of a calibration file, or a CalibrationError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CalibrationError(f"cannot read {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: a {what} file is a YAML mapping, got {type(data).__name__}")
    return data


def read_array(path: str | Path, data: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """`data[key]` as a finite float array of `shape`, or a CalibrationError naming file and key."""
    if key not in data:
        raise CalibrationError(f"{path}: missing key '{key}'")
    try:
        value = np.asarray(data[key], np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: '{key}' is not numeric: {data[key]!r}") from None
    if value.shape != shape or not np.all(np.isfinite(value)):
        raise CalibrationError(f"{path}: '{key}' must be finite numbers with shape {shape}, got {data[key]!r}")
    return value


def _read_size(path: str | Path, data: dict) -> tuple[int, int]:
    size = []
    for key in ("image_width", "image_height"):
        if key not in data:
            raise CalibrationError(f"{path}: missing key '{key}'")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CalibrationError(f"{path}: '{key}' must be a positive integer (pixels), got {value!r}")
        size.append(value)
    return size[0], size[1]


# ----- the camera node's centre crop + resize, as a map of pixel coordinates ------------------
def centre_crop_box(capture_width: int, capture_height: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, crop_width, crop_height): the centred crop of a capture to the aspect of width x height."""
    target_ratio = width / height
    if capture_width / capture_height > target_ratio:
        crop_width = int(round(capture_height * target_ratio))
        return (capture_width - crop_width) // 2, 0, crop_width, capture_height
    crop_height = int(round(capture_width / target_ratio))
    return 0, (capture_height - crop_height) // 2, capture_width, crop_height


def camera_matrix_for_output(
    camera_matrix: np.ndarray, capture_size: tuple[int, int], output_size: tuple[int, int]
) -> np.ndarray:
    """K of the published image (centre crop to the output aspect, then resize) from K at capture size.

    A capture pixel u maps to u' = (u - x0 + 0.5) * s - 0.5 with s = output / crop (pixel centres
    map onto pixel centres, as cv2.resize samples), so fx' = s fx and cx' = (cx - x0 + 0.5) s - 0.5.
    """
    x0, y0, crop_width, crop_height = centre_crop_box(*capture_size, *output_size)
    scale_x, scale_y = output_size[0] / crop_width, output_size[1] / crop_height
    pixel_map = np.array([  # homogeneous capture pixel -> output pixel
        [scale_x, 0.0, (0.5 - x0) * scale_x - 0.5],
        [0.0, scale_y, (0.5 - y0) * scale_y - 0.5],
        [0.0, 0.0, 1.0],
    ])
    return pixel_map @ np.asarray(camera_matrix, np.float64)


def _for_output_size(model, width: int, height: int):
    """A copy of an `Intrinsics` or `CameraModel` with K moved onto width x height (itself if unchanged)."""
    if (width, height) == (model.width, model.height):
        return model
    camera_matrix = camera_matrix_for_output(model.camera_matrix, (model.width, model.height), (width, height))
    return replace(model, camera_matrix=camera_matrix, width=width, height=height)


@dataclass
class Intrinsics:
    """Pinhole + distortion model of the camera at the size it was calibrated at (its capture size)."""

    camera_matrix: np.ndarray  # (3, 3) K
    distortion: np.ndarray  # (5,) k1 k2 p1 p2 k3
    width: int
    height: int
    reprojection_error_px: float = float("nan")
    views: int = 0

    def for_output_size(self, width: int, height: int) -> "Intrinsics":
        return _for_output_size(self, width, height)

    def to_dict(self) -> dict:
        return {
            "image_width": int(self.width),
            "image_height": int(self.height),
            "camera_matrix": np.round(self.camera_matrix, 6).tolist(),
            "distortion": np.round(self.distortion, 8).tolist(),
            "reprojection_error_px": round(float(self.reprojection_error_px), 4),
            "views": int(self.views),
        }

    def save(self, path: str | Path) -> Path:
        return write_yaml_atomic(path, self.to_dict(), "parl_robot camera intrinsics (chessboard, at the camera's capture size)")

    @classmethod
    def load(cls, path: str | Path) -> "Intrinsics":
        data = read_yaml_mapping(path, "intrinsics")
        width, height = _read_size(path, data)
        return cls(read_array(path, data, "camera_matrix", (3, 3)), read_array(path, data, "distortion", (5,)), width, height,
                   float(data.get("reprojection_error_px", float("nan"))), int(data.get("views", 0)))


@dataclass
class CameraModel:
    camera_matrix: np.ndarray  # (3, 3) K
    distortion: np.ndarray  # (5,) k1 k2 p1 p2 k3
    width: int
    height: int
    rotation: np.ndarray  # (3, 3) R: robot frame -> camera frame
    translation: np.ndarray  # (3,) t: x_cam = R x_robot + t
    reprojection_error_px: float = float("nan")

    @property
    def camera_position(self) -> np.ndarray:
        """The camera centre in the robot frame."""
        return -self.rotation.T @ self.translation

    def project(self, points_robot: np.ndarray) -> np.ndarray:
        """(N, 3) robot-frame points -> (N, 2) pixels (distortion applied)."""
        rvec, _ = cv2.Rodrigues(self.rotation)
        pixels, _ = cv2.projectPoints(
            np.asarray(points_robot, np.float64).reshape(-1, 1, 3), rvec, self.translation.astype(np.float64),
            self.camera_matrix, self.distortion,
        )
        return pixels.reshape(-1, 2)

    def pixel_to_plane(self, pixel: np.ndarray, plane_height: float) -> np.ndarray:
        """The robot-frame point where the pixel's viewing ray meets the plane z = plane_height."""
        undistorted = cv2.undistortPoints(np.asarray(pixel, np.float64).reshape(1, 1, 2), self.camera_matrix, self.distortion)
        ray_camera = np.array([*undistorted.reshape(2), 1.0])
        ray_robot = self.rotation.T @ ray_camera
        origin = self.camera_position
        if abs(ray_robot[2]) < 1e-9:
            raise CalibrationError(f"pixel {pixel} looks parallel to the plane z={plane_height}")
        scale = (plane_height - origin[2]) / ray_robot[2]
        if scale <= 0:
            raise CalibrationError(f"plane z={plane_height} is behind the camera for pixel {pixel}")
        return origin + scale * ray_robot

    def for_output_size(self, width: int, height: int) -> "CameraModel":
        """This camera as seen in the images the camera node publishes at width x height (same pose)."""
        return _for_output_size(self, width, height)

    # ----- YAML ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "image_width": int(self.width),
            "image_height": int(self.height),
            "camera_matrix": np.round(self.camera_matrix, 6).tolist(),
            "distortion": np.round(self.distortion, 8).tolist(),
            "rotation_robot_to_camera": np.round(self.rotation, 8).tolist(),
            "translation_robot_to_camera": np.round(self.translation, 6).tolist(),
            "reprojection_error_px": float(self.reprojection_error_px),
        }

    def save(self, path: str | Path) -> Path:
        return write_yaml_atomic(path, self.to_dict(), "parl_robot camera calibration (robot base frame -> OpenCV camera frame)")

    @classmethod
    def load(cls, path: str | Path) -> "CameraModel":
        """The model at the size it was calibrated at; `for_output_size` gives the published images' model."""
        data = read_yaml_mapping(path, "camera calibration")
        width, height = _read_size(path, data)
        rotation = read_array(path, data, "rotation_robot_to_camera", (3, 3))
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
            raise CalibrationError(f"{path}: 'rotation_robot_to_camera' is not a rotation matrix")
        return cls(read_array(path, data, "camera_matrix", (3, 3)), read_array(path, data, "distortion", (5,)), width, height,
                   rotation, read_array(path, data, "translation_robot_to_camera", (3,)),
                   float(data.get("reprojection_error_px", float("nan"))))


# ----- intrinsics from chessboard views ------------------------------------------------------
def find_chessboard(image: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner-corner positions (N, 2) of a chessboard with `board` = (cols, rows) inner corners."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    found, corners = cv2.findChessboardCorners(gray, board, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
    corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
    return corners.reshape(-1, 2)


def chessboard_points(board: tuple[int, int], square_m: float) -> np.ndarray:
    cols, rows = board
    grid = np.zeros((rows * cols, 3), np.float32)
    grid[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * square_m
    return grid


def calibrate_intrinsics(
    images: list[np.ndarray], board: tuple[int, int], square_m: float, min_views: int = 5
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(K, distortion, RMS reprojection error px, views used) from chessboard images."""
    if not images:
        raise CalibrationError("no chessboard images given")
    height, width = images[0].shape[:2]
    detections = [find_chessboard(image, board) for image in images]
    used = [d for d in detections if d is not None]
    if len(used) < min_views:
        raise CalibrationError(
            f"the {board[0]}x{board[1]} chessboard was found in {len(used)} of {len(images)} images; need {min_views}"
        )
    object_points = [chessboard_points(board, square_m)] * len(used)
    rms, camera_matrix, distortion, _, _ = cv2.calibrateCamera(
        object_points, [d.astype(np.float32).reshape(-1, 1, 2) for d in used], (width, height), None, None
    )
    return camera_matrix, distortion.reshape(-1)[:5], float(rms), len(used)


# ----- extrinsics from correspondences --------------------------------------------------------
def calibrate_extrinsics(
    points_robot: np.ndarray, pixels: np.ndarray, camera_matrix: np.ndarray, distortion: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera pose (R, t: robot -> camera) and RMS reprojection error (px) from >= 6 non-coplanar
    robot-frame points (marker centres or touched points) and their pixels."""
    points_robot = np.asarray(points_robot, np.float64).reshape(-1, 3)
    pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
    if len(points_robot) != len(pixels):
        raise CalibrationError(f"{len(points_robot)} robot points but {len(pixels)} pixels")
    if len(points_robot) < 6:
        raise CalibrationError(f"need at least 6 point pairs for the camera pose, got {len(points_robot)}")
    spread = np.linalg.svd(points_robot - points_robot.mean(0), compute_uv=False)
    if spread[-1] < 1e-3:
        raise CalibrationError("the robot points are (nearly) coplanar: move the gripper to different heights too")
    ok, rvec, tvec = cv2.solvePnP(points_robot, pixels, camera_matrix, distortion, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise CalibrationError("solvePnP found no camera pose for these points")
    rvec, tvec = cv2.solvePnPRefineLM(points_robot, pixels, camera_matrix, distortion, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    projected, _ = cv2.projectPoints(points_robot.reshape(-1, 1, 3), rvec, tvec, camera_matrix, distortion)
    error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - pixels) ** 2, axis=1))))
    return rotation, tvec.reshape(3), error


def find_aruco_centre(image: np.ndarray, marker_id: int, dictionary: str = "DICT_4X4_50") -> np.ndarray | None:
    """Pixel centre (2,) of ArUco marker `marker_id` (mean of its 4 refined corners), or None."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    parameters = cv2.aruco.DetectorParameters()
    parameters.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)), parameters)
    corners, ids, _ = detector.detectMarkers(gray)
    if ids is None:
        return None
    for marker_corners, found_id in zip(corners, ids.reshape(-1)):
        if int(found_id) == marker_id:
            return marker_corners.reshape(4, 2).mean(axis=0)
    return None


# ----- the extrinsics samples file -----------------------------------------------------------
@dataclass
class MarkerSample:
    image: Path  # full-resolution camera frame (resolved against the samples file's folder)
    ee_xyz: np.ndarray  # (3,) measured end-effector position, robot frame


@dataclass
class PointSample:
    pixel: np.ndarray  # (2,) at the intrinsics' image size
    point: np.ndarray  # (3,) robot frame


@dataclass
class ExtrinsicSamples:
    """`{marker_offset: [dx, dy, dz], samples: [{image, ee_xyz} | {pixel, point}, ...]}`: the marker
    centre is at ee_xyz + marker_offset (robot frame; the gripper points down at a fixed yaw)."""

    samples: list
    marker_offset: np.ndarray

    def save(self, path: str | Path) -> Path:
        folder = Path(path).parent.resolve()
        samples = []
        for sample in self.samples:
            if isinstance(sample, MarkerSample):
                image = Path(sample.image).resolve()
                samples.append({"image": str(image.relative_to(folder) if image.is_relative_to(folder) else image),
                                "ee_xyz": np.round(sample.ee_xyz, 5).tolist()})
            else:
                samples.append({"pixel": np.round(sample.pixel, 3).tolist(), "point": np.round(sample.point, 5).tolist()})
        return write_yaml_atomic(path, {"marker_offset": np.round(self.marker_offset, 5).tolist(), "samples": samples},
                                 "parl_robot extrinsics samples: camera frames and the measured end-effector positions")


def load_extrinsic_samples(path: str | Path) -> ExtrinsicSamples:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CalibrationError(f"cannot read extrinsics samples {path}: {err}") from err
    if isinstance(document, list):
        document = {"samples": document}
    if not isinstance(document, dict) or not isinstance(document.get("samples"), list):
        raise CalibrationError(f"{path}: expected a mapping with a 'samples' list (and optionally 'marker_offset')")
    unknown = set(document) - {"samples", "marker_offset"}
    if unknown:
        raise CalibrationError(f"{path}: unknown key(s) {sorted(unknown)} (known: marker_offset, samples)")
    offset = read_array(path, document, "marker_offset", (3,)) if "marker_offset" in document else np.zeros(3)
    samples = []
    for index, sample in enumerate(document["samples"]):
        where = f"{path} samples[{index}]"
        if not isinstance(sample, dict):
            raise CalibrationError(f"{where}: expected {{image, ee_xyz}} or {{pixel, point}}, got {sample!r}")
        if set(sample) == {"image", "ee_xyz"}:
            if not isinstance(sample["image"], str) or not sample["image"]:
                raise CalibrationError(f"{where}: 'image' must be a file name, got {sample['image']!r}")
            samples.append(MarkerSample(path.parent / sample["image"], read_array(where, sample, "ee_xyz", (3,))))
        elif set(sample) == {"pixel", "point"}:
            samples.append(PointSample(read_array(where, sample, "pixel", (2,)), read_array(where, sample, "point", (3,))))
        else:
            raise CalibrationError(f"{where}: keys {sorted(sample)}; expected exactly {{image, ee_xyz}} or {{pixel, point}}")
    if not samples:
        raise CalibrationError(f"{path}: 'samples' is empty")
    return ExtrinsicSamples(samples, offset)


def load_task_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(target (N, 3), workspace (M, 3)) from `{target: [[x, y, z], ...], workspace: [[x, y, z], ...]}`."""
    data = read_yaml_mapping(path, "task points")
    unknown = set(data) - {"target", "workspace"}
    if unknown:
        raise CalibrationError(f"{path}: unknown key(s) {sorted(unknown)} (known: target, workspace)")
    points = []
    for key in ("target", "workspace"):
        count = len(data[key]) if isinstance(data.get(key), list) else 0
        points.append(read_array(path, data, key, (count, 3)))
    return points[0], points[1]


# ----- per-task workspace file ----------------------------------------------------------------
def task_workspace_overlay(
    target_points: np.ndarray, workspace_points: np.ndarray, target_margin_m: float = 0.01, workspace_margin_m: float = 0.0
) -> dict:
    """Config overlay (reward target region + control safety box) from points touched with the gripper:
    the target's corners (and its top height) and the corners of the space the arm may use."""
    target_points = np.asarray(target_points, float).reshape(-1, 3)
    workspace_points = np.asarray(workspace_points, float).reshape(-1, 3)
    if len(target_points) < 2 or len(workspace_points) < 2:
        raise CalibrationError("touch at least 2 target points and 2 workspace points")
    target_low = target_points.min(0) - target_margin_m
    target_high = target_points.max(0) + target_margin_m
    box_low = workspace_points.min(0) - workspace_margin_m
    box_high = workspace_points.max(0) + workspace_margin_m
    if np.any(box_high - box_low < 0.05):
        raise CalibrationError(f"safety box {box_low.round(3).tolist()}..{box_high.round(3).tolist()} is thinner than 5 cm on some axis")
    return {
        "reward": {"target_low": np.round(target_low, 4).tolist(), "target_high": np.round(target_high, 4).tolist()},
        "control": {"safety_box_low": np.round(box_low, 4).tolist(), "safety_box_high": np.round(box_high, 4).tolist()},
    }
