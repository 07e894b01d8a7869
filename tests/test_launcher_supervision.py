"""`parl-robot launch finetune` as an operator runs it (real processes, real Fast DDS, the page over
HTTP): a SIGKILLed learner is restarted while the sim arm and the page stay up and e-stop keeps
working; Ctrl-C then stops every node cleanly — exit code 0 and no traceback from any node."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # real processes through several episodes: `scripts/test.sh -m slow`

pytest.importorskip("rclpy")

from graph_harness import free_port, isolated_ros_env, stop_launch  # noqa: E402
from parl_robot.config import load_config  # noqa: E402
from parl_robot.data.episode_store import EpisodeStore  # noqa: E402
from parl_robot.sim.record_demos import record_demos  # noqa: E402

OVERRIDES = {
    "episodes.num_online_episodes": 50,
    "learner.schedule.warmup_episodes": 1,
    "learner.schedule.offline_policy_steps": 40,
    "learner.schedule.offline_critic_steps": 20,
    "learner.schedule.updates_per_step": 0.5,
    "control.max_episode_steps": 12,
}


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as response:
            return json.load(response)
    except OSError:
        return None


def _post(port: int, path: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
        headers={"Content-Type": "application/json", "X-Operator-Request": "1", "Origin": f"http://127.0.0.1:{port}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait(predicate, timeout: float, what: str, output) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{output()[-4000:]}")


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_dead_learner_is_restarted_page_and_estop_stay_up_and_ctrl_c_exits_cleanly(tmp_path):
    store_dir = tmp_path / "store"
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(store_dir)})
    record_demos(cfg, EpisodeStore(store_dir), 3, log=lambda *_: None)
    port = free_port()
    _, env = isolated_ros_env()
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-u", "-m", "parl_robot.cli", "launch", "finetune", "task:=cup_to_rack", "sim:=true",
             "overlay:=cpu_demo", f"store_dir:={store_dir}", f"ui_port:={port}", f"overrides:={json.dumps(OVERRIDES)}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

    def output() -> str:
        return log_path.read_text()

    try:
        _wait(lambda: (_status(port) or {}).get("episode_state") == "running", 180, "an episode running", output)
        learner = [pid for pid in _pids("parl_robot.nodes.learner_node") if str(store_dir) in
                   open(f"/proc/{pid}/cmdline").read().replace("\0", " ")]
        assert len(learner) == 1
        subprocess.run(["kill", "-9", str(learner[0])], check=True)
        _wait(lambda: "learner exited with code -9; restarting it" in output(), 20, "the launcher noticing", output)
        # The arm's node and the page are still up, and e-stop works with the learner down.
        assert launcher.poll() is None and _status(port) is not None
        assert _post(port, "/api/estop") == 200
        _wait(lambda: (_status(port) or {}).get("robot", {}).get("held_reasons") == ["estop"], 10, "e-stop latched", output)
        assert _post(port, "/api/estop_clear") == 200
        # The learner comes back from its checkpoint and the stored episodes, and the run goes on.
        _wait(lambda: output().count("loaded 3 demo episodes") >= 2, 120, "the learner restarted", output)
        _wait(lambda: (_status(port) or {}).get("episode_state") == "running", 180, "running again", output)
    finally:
        stop_launch(launcher, grace_s=90)
    text = output()
    assert launcher.returncode == 0, text[-4000:]
    assert "[launch] stopped cleanly" in text, text[-4000:]
    assert "Traceback" not in text and "Exception" not in text, text[-6000:]
