"""Operator page: every endpoint through Flask's test client, with a recording stand-in for the graph."""

import json

import numpy as np
import pytest

from operator_ui.app import create_app
from operator_ui.state import OperatorState, success_curve
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.rl.replay_buffer import EpisodeData


class RecordingGraph:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.services: list[str] = []
        self.service_result = (True, "done")

    def publish_event(self, kind, **fields):
        self.events.append((kind, fields))

    def call_service(self, name, timeout_s=3.0):
        self.services.append(name)
        return self.service_result


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _store_with_episodes(root, outcomes=(True, False, True)):
    store = EpisodeStore(root)
    for i, success in enumerate(outcomes):
        episode = EpisodeData(np.zeros((4, 7), np.float32), np.zeros((3, 7), np.float32), np.full(3, -1.0, np.float32), success)
        record = EpisodeRecord(
            f"online_{i:05d}", "online", success, "success" if success else "failure", "detector", 3, i, "h", "cup_to_rack",
            created=1000.0 + i, phase="warmup" if i == 0 else "online",
        )
        store.save(record, episode, thumbnail=np.full((16, 16, 3), 60 * i, np.uint8))
    return store


@pytest.fixture
def rig(tmp_path):
    clock = Clock()
    state = OperatorState("cup_to_rack", "put the cup on the drying rack", 40, clock=clock)
    graph = RecordingGraph()
    store = _store_with_episodes(tmp_path / "store")
    app = create_app(state, graph, store)
    app.testing = True
    return app.test_client(), state, graph, store, clock


def _live(state, clock, episode_state="waiting_for_reset"):
    """Inputs of a healthy graph: learner stats, robot status, a camera frame, an episode state."""
    state.on_stats({"phase": "online", "critic_loss": float("nan"), "policy_version": 3, "warning": ""})
    state.on_status({"estopped": False, "holding": False, "last_error": ""})
    state.on_image(np.zeros((8, 8, 3), np.uint8))
    state.on_event({"type": "state", "state": episode_state, "episode": 4})


def test_page_and_status(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "running")
    page = client.get("/")
    assert page.status_code == 200 and b"btn-estop" in page.data and b"put the cup" in page.data
    status = client.get("/api/status")
    assert status.status_code == 200
    data = json.loads(status.data)  # strict JSON: the learner's NaN loss arrives as null
    assert data["episode_state"] == "running" and data["episode"] == 4 and data["learner"]["critic_loss"] is None
    assert data["warnings"] == []
    for _ in range(3):
        state.on_action()
    state.on_reward(-1.0)
    assert client.get("/api/status").get_json()["step"] == 3
    assert client.get("/api/status").get_json()["reward"] == -1.0


def test_warnings_for_lost_camera_estop_watchdog_and_lost_learner(rig):
    client, state, _, _, clock = rig
    _live(state, clock, "running")
    clock.now += 2.0  # camera (1 s) stale; learner (5 s) and control (3 s) still fresh
    state.on_status({"estopped": True, "holding": True, "last_error": ""})
    codes = {w["code"] for w in client.get("/api/status").get_json()["warnings"]}
    assert codes == {"camera_lost", "estop", "watchdog"}
    clock.now += 10.0
    codes = {w["code"] for w in client.get("/api/status").get_json()["warnings"]}
    assert {"learner_lost", "control_lost"} <= codes
    assert client.get("/api/status").get_json()["camera_ok"] is False


def test_warnings_for_stale_and_frozen_camera_frames(rig):
    client, state, _, _, clock = rig
    _live(state, clock, "running")

    def codes():
        return {w["code"] for w in client.get("/api/status").get_json()["warnings"]}

    state.on_image(np.zeros((8, 8, 3), np.uint8), stamp_age_s=0.4)
    assert codes() == set()
    clock.now += 0.7  # arrived 0.7 s ago (not lost), but taken 1.1 s ago by its stamp
    assert codes() == {"camera_stale"}
    assert "1.1 s ago" in client.get("/api/status").get_json()["warnings"][0]["text"]
    state.on_image(np.zeros((8, 8, 3), np.uint8), stamp_age_s=0.05)
    state.on_camera_status({"connected": True, "fps": 30.0, "age_s": 0.01, "identical_frames": 12, "frozen": True})
    assert codes() == {"camera_frozen"}
    assert "12 identical frames" in client.get("/api/status").get_json()["warnings"][0]["text"]
    state.on_camera_status({"connected": True, "fps": 30.0, "age_s": 0.01, "identical_frames": 0, "frozen": False})
    assert codes() == set()


def test_camera_jpeg(rig):
    client, state, *_ = rig
    assert client.get("/api/camera.jpg").status_code == 503
    state.on_image(np.full((8, 8, 3), 200, np.uint8))
    response = client.get("/api/camera.jpg")
    assert response.status_code == 200 and response.mimetype == "image/jpeg" and response.data[:2] == b"\xff\xd8"


def test_reset_done_only_when_waiting_for_reset(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "running")
    response = client.post("/api/reset_done")
    assert response.status_code == 409 and "running" in response.get_json()["error"]
    assert graph.events == []
    state.on_event({"type": "state", "state": "waiting_for_reset"})
    assert client.post("/api/reset_done").status_code == 200
    assert graph.events == [("reset_done", {"source": "operator"})]


def test_label_current_episode_or_override_last_saved(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "awaiting_label")
    assert client.post("/api/label", json={"success": True}).get_json()["action"] == "label"
    assert graph.events[-1] == ("label", {"success": True, "source": "operator", "episode": 4})
    state.on_event({"type": "saved", "episode": 4, "episode_id": "online_00002", "success": True})
    state.on_event({"type": "state", "state": "waiting_for_reset"})
    response = client.post("/api/label", json={"success": False})
    assert response.status_code == 202 and response.get_json()["action"] == "relabel"
    assert graph.events[-1] == ("relabel", {"episode_id": "online_00002", "label": "failure", "source": "operator"})


@pytest.mark.parametrize(
    "body, error",
    [
        ('{"success": "yes"}', "must be bool"),
        ('{"success": 1}', "must be bool"),
        ("{}", "missing field"),
        ('{"success": true, "extra": 1}', "unknown field"),
        ("[true]", "JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_malformed_label_requests_are_rejected_and_change_nothing(rig, body, error):
    client, state, graph, _, clock = rig
    _live(state, clock, "awaiting_label")
    response = client.post("/api/label", data=body, content_type="application/json")
    assert response.status_code == 400 and error in response.get_json()["error"]
    assert graph.events == []


def test_unknown_routes_methods_and_oversized_bodies_get_json_errors(rig):
    client, state, graph, _, clock = rig
    _live(state, clock)
    assert client.get("/api/nope").get_json()["status"] == 404
    assert client.get("/api/estop").status_code == 405 and client.get("/api/estop").is_json
    assert client.post("/api/pause", data="x" * 10_000).status_code == 413
    assert client.post("/api/pause", json={"now": True}).status_code == 400
    assert graph.events == []


def test_discard_pause_resume_home_estop(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "waiting_for_reset")
    assert client.post("/api/discard").status_code == 409
    state.on_event({"type": "state", "state": "running"})
    assert client.post("/api/discard").status_code == 200
    assert client.post("/api/home").status_code == 409  # not while running
    assert client.post("/api/pause").status_code == 200 and client.post("/api/resume").status_code == 200
    assert [kind for kind, _ in graph.events] == ["discard", "pause", "resume"]
    state.on_event({"type": "state", "state": "waiting_for_reset"})
    assert client.post("/api/home").status_code == 200
    assert client.post("/api/estop", data="garbage").status_code == 200  # never refused for form
    assert client.post("/api/estop_clear").status_code == 200
    assert graph.services == ["robot/home", "robot/estop", "robot/estop_clear"]
    graph.service_result = (False, "service robot/estop is not available")
    response = client.post("/api/estop")
    assert response.status_code == 503 and "not available" in response.get_json()["error"]


def test_estop_does_not_need_the_learner(rig):
    client, state, graph, _, clock = rig
    # No learner stats ever arrived (learner down): e-stop still reaches the control node.
    assert client.post("/api/estop").status_code == 200 and graph.services == ["robot/estop"]


def test_episode_list_thumbnails_and_relabel(rig):
    client, state, graph, store, clock = rig
    _live(state, clock)
    episodes = client.get("/api/episodes?limit=2").get_json()
    assert [e["episode_id"] for e in episodes] == ["online_00002", "online_00001"]
    assert episodes[0]["has_thumbnail"] and episodes[0]["label"] == "success"
    thumb = client.get("/api/episodes/online_00001/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.data[:2] == b"\xff\xd8"
    assert client.get("/api/episodes/..%2Fetc/thumbnail.jpg").status_code == 404
    assert client.get("/api/episodes?limit=abc").status_code == 400
    assert client.get("/api/episodes?limit=0").status_code == 400
    response = client.post("/api/episodes/online_00001/label", json={"label": "success"})
    assert response.status_code == 202
    assert graph.events[-1] == ("relabel", {"episode_id": "online_00001", "label": "success", "source": "operator"})
    assert client.post("/api/episodes/online_00009/label", json={"label": "success"}).status_code == 404
    assert client.post("/api/episodes/online_00001/label", json={"label": "maybe"}).status_code == 400
    clock.now += 60  # learner gone: stored labels are not touched behind its back
    assert client.post("/api/episodes/online_00001/label", json={"label": "failure"}).status_code == 503
    assert len(graph.events) == 1


def test_success_curve(rig):
    client, *_ = rig
    curve = client.get("/api/curve").get_json()
    assert [p["success"] for p in curve["points"]] == [True, False, True]
    assert [round(p["moving_average"], 3) for p in curve["points"]] == [1.0, 0.5, 0.667]
    assert curve["phases"]["warmup"] == {"episodes": 1, "successes": 1, "success_rate": 1.0}
    assert curve["phases"]["online"]["success_rate"] == 0.5
    assert success_curve([{"episode_id": "demo_00000", "kind": "demo", "success": True}])["points"] == []


def test_token_required_on_every_request(tmp_path):
    state = OperatorState("cup_to_rack", "x", 40)
    graph = RecordingGraph()
    store = EpisodeStore(tmp_path)
    with pytest.raises(ValueError, match="needs a token"):
        create_app(state, graph, store, token="", host="0.0.0.0")
    client = create_app(state, graph, store, token="s3cret", host="0.0.0.0").test_client()
    for path in ("/", "/api/status", "/api/camera.jpg", "/api/curve", "/api/episodes"):
        response = client.get(path)
        assert response.status_code == 401 and "token" in response.get_json()["error"], path
    assert client.post("/api/estop").status_code == 401 and graph.services == []
    assert client.get("/api/status", headers={"X-Operator-Token": "wrong"}).status_code == 401
    assert client.get("/api/status", headers={"X-Operator-Token": "s3cret"}).status_code == 200
    page = client.get("/?token=s3cret")  # the page sets a cookie so its own requests carry the token
    assert page.status_code == 200 and "operator_token=s3cret" in page.headers["Set-Cookie"]
    assert client.get("/api/status").status_code == 200
