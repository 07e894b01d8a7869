"""Camera calibration for the real setup: intrinsics from chessboard views, camera->robot extrinsics
from an ArUco marker on the gripper (or touched points) seen at known end-effector positions, and
the per-task workspace file (target region + safety box) from touched corner points.

Frames: the robot base frame of the Interbotix driver (x forward, z up, metres); the OpenCV camera
frame (x right, y down, z forward). `CameraModel.project` maps robot points to pixels and
`CameraModel.pixel_to_plane` maps a pixel back onto a horizontal plane z = h in the robot frame,
which is how the object detector turns a blob centroid into an object position.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    temporary.write_text(f"# {header}\n" + yaml.safe_dump(data, sort_keys=False))
    temporary.replace(path)
    return path


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
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise CalibrationError(f"cannot read calibration {path}: {err}") from err
        expected = {"image_width": (), "image_height": (), "camera_matrix": (3, 3), "distortion": (5,),
                    "rotation_robot_to_camera": (3, 3), "translation_robot_to_camera": (3,)}
        if not isinstance(data, dict):
            raise CalibrationError(f"{path}: expected a mapping with keys {sorted(expected)}")
        values = {}
        for key, shape in expected.items():
            if key not in data:
                raise CalibrationError(f"{path}: missing key '{key}'")
            try:
                value = np.asarray(data[key], np.float64)
            except (TypeError, ValueError):
                raise CalibrationError(f"{path}: '{key}' is not numeric: {data[key]!r}") from None
            if value.shape != shape or not np.all(np.isfinite(value)):
                raise CalibrationError(f"{path}: '{key}' must be finite with shape {shape}, got {data[key]!r}")
            values[key] = value
        rotation = values["rotation_robot_to_camera"]
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
            raise CalibrationError(f"{path}: 'rotation_robot_to_camera' is not a rotation matrix")
        return cls(values["camera_matrix"], values["distortion"], int(values["image_width"]), int(values["image_height"]),
                   rotation, values["translation_robot_to_camera"], float(data.get("reprojection_error_px", float("nan"))))


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
