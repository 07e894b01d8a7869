"""Layering: the CLI's offline commands, the graph and the learning code import without ROS, the
hardware control node without MuJoCo, and no package imports from a layer above it."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "parl_robot"
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs", "rosgraph_msgs",
               "builtin_interfaces", "launch", "launch_ros", "ament_index_python")
BLOCKER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or name in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Blocked())
"""


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    """Python `code` in a fresh interpreter where importing any of `blocked` fails, as if not installed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), MUJOCO_GL="egl")
    script = f"BLOCKED = {set(blocked)!r}\n{BLOCKER}\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_cli_graph_and_learning_code_import_without_ros():
    result = run_without(ROS_MODULES, """
import sys
import parl_robot.cli, parl_robot.graph, parl_robot.topics, parl_robot.launcher
import parl_robot.calibrate_cli, parl_robot.data.hdf5_export
import parl_robot.rl.trainer, parl_robot.episode_machine, parl_robot.sim.rollout, parl_robot.task_agent
from parl_robot.graph import finetune_graph, ros_arguments
specs = finetune_graph({"sim": "false"})
assert "-r" in ros_arguments(specs[0]) and "__ns:=/parl" in ros_arguments(specs[0])
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("imported")
""")
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-3000:]


def test_export_import_and_calibrate_run_without_ros(tmp_path):
    pytest.importorskip("h5py")
    from parl_robot.data.episode import EpisodeData
    from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore

    store = EpisodeStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    episode = EpisodeData(rng.normal(size=(4, 7)).astype(np.float32), rng.uniform(-1, 1, (3, 7)).astype(np.float32),
                          np.array([-1, -1, 0], np.float32), True)
    store.save(EpisodeRecord("demo_00000", "demo", True, "success", "demonstrator", 3, -1, "hash", "cup_to_rack"), episode)
    out, copy = tmp_path / "episodes.hdf5", tmp_path / "copy"
    result = run_without(ROS_MODULES, f"""
from parl_robot.cli import main
assert main(["export", "store_dir:={store.root}", "out:={out}"]) == 0
assert main(["import", "store_dir:={copy}", "in:={out}"]) == 0
assert main(["calibrate", "workspace", "task:=cup_to_rack", "grid:=2x2x2"]) in (0, 1)
""")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "exported 1 episodes" in result.stdout and "imported 1 episodes" in result.stdout
    assert "safety box of" in result.stdout
    assert [r["episode_id"] for r in EpisodeStore(copy).records()] == ["demo_00000"]


def test_control_node_imports_without_mujoco():
    pytest.importorskip("rclpy")
    result = run_without(("mujoco",), """
import sys
import parl_robot.nodes.control_node
assert "parl_robot.sim.world" not in sys.modules
print("imported")
""")
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-3000:]


# Which parl_robot packages each package may import (itself included): lower layers never import
# higher ones. Top-level modules are listed by name.
ALLOWED = {
    "config": set(), "topics": set(), "observation": set(), "json_values": set(), "gumbel": set(),
    "episode_machine": {"config"},
    "data": {"data"},
    "nets": {"nets"},
    "policies": {"config", "gumbel", "nets", "policies"},
    "rl": {"config", "data", "gumbel", "nets", "policies", "rl"},
    "robot": {"config", "robot"},
    "perception": {"config", "json_values", "nets", "perception", "robot"},
    "sim": {"config", "data", "observation", "perception", "robot", "sim"},
    "launch_arguments": {"config"},
    "graph": {"launch_arguments", "topics"},
    "launcher": {"graph"},
}


def _imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        names |= {m.split(".")[1] for m in modules if m.startswith("parl_robot.")}
    return names


def test_no_package_imports_from_a_layer_above_it():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        layer = parts[0]
        if layer not in ALLOWED:  # nodes, cli and the package root sit on top
            continue
        extra = _imported_packages(path) - ALLOWED[layer] - {layer}
        if extra:
            violations.append(f"{path.relative_to(REPO)} imports {sorted(extra)}")
    assert violations == []
