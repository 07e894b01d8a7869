"""Operator page: every endpoint through Flask's test client, with a recording stand-in for the graph."""

import json
import re
import threading
import time

import numpy as np
import pytest

from operator_ui.app import REQUEST_HEADER, ApiError, create_app, cross_origin_reason, host_name
from operator_ui.state import OperatorState, success_curve
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.data.episode import EpisodeData


class RecordingGraph:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.services: list[str] = []
        self.service_timeouts: list[float] = []
        self.service_result = (True, "done")
        self.publish_delay_s = 0.0

    def publish_event(self, kind, **fields):
        time.sleep(self.publish_delay_s)  # widens the window between a label's check and its announcement
        self.events.append((kind, fields))

    def call_service(self, name, timeout_s=3.0):  # the GraphCommands protocol's default wait
        self.services.append(name)
        self.service_timeouts.append(timeout_s)
        return self.service_result

    def publish_teleop(self, action, takeover):
        self.events.append(("teleop", {"action": action, "takeover": takeover}))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _store_with_episodes(root, outcomes=(True, False, True)):
    store = EpisodeStore(root)
    demo = EpisodeData(np.zeros((3, 7), np.float32), np.zeros((2, 7), np.float32), np.array([-1.0, 0.0], np.float32), True)
    store.save(EpisodeRecord("demo_00000", "demo", True, "success", "demonstrator", 2, -1, "h", "cup_to_rack", created=900.0, phase="demo"), demo)
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
    return _page_client(app), state, graph, store, clock


def _page_client(app):
    """A client that sends what the operator page's script sends with every POST."""
    client = app.test_client()
    client.environ_base["HTTP_" + REQUEST_HEADER.upper().replace("-", "_")] = "1"
    return client


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
    for step_id in range(3):
        state.on_action(step_id)
    state.on_reward(-1.0)
    assert client.get("/api/status").get_json()["step"] == 3
    assert client.get("/api/status").get_json()["reward"] == -1.0
    # Actions the learner sent before the end reached it are stored, so the page counts them too.
    state.on_event({"type": "state", "state": "awaiting_label", "episode": 4})
    state.on_action(3)
    assert client.get("/api/status").get_json()["step"] == 4
    state.on_event({"type": "start", "state": "running", "episode": 5})
    assert client.get("/api/status").get_json()["step"] == 0


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


def test_label_names_the_episode_awaiting_a_label(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "running")
    state.on_event({"type": "saved", "episode": 3, "episode_id": "online_00002", "success": True})
    # S/F while episode 4 runs: the page sends 4; nothing is labelled, the previous episode least of all.
    response = client.post("/api/label", json={"success": False, "episode": 4})
    assert response.status_code == 409 and "awaiting a label" in response.get_json()["error"]
    response = client.post("/api/label", json={"success": False, "episode": 3})
    assert response.status_code == 409 and graph.events == []
    state.on_event({"type": "state", "state": "awaiting_label", "episode": 4})
    response = client.post("/api/label", json={"success": True, "episode": 3})  # a stale page
    assert response.status_code == 409 and "episode 4 is awaiting a label, not episode 3" in response.get_json()["error"]
    assert graph.events == []
    response = client.post("/api/label", json={"success": True, "episode": 4})
    assert response.status_code == 200 and response.get_json()["action"] == "label"
    assert graph.events == [("label", {"success": True, "source": "operator", "episode": 4})]
    # A repeat (double click) is fine and announces nothing; a conflicting second label is refused.
    assert client.post("/api/label", json={"success": True, "episode": 4}).get_json()["action"] == "already_labelled"
    response = client.post("/api/label", json={"success": False, "episode": 4})
    assert response.status_code == 409 and "already labelled success" in response.get_json()["error"]
    assert len(graph.events) == 1
    status = client.get("/api/status").get_json()
    assert status["episode_label"] == {"success": True, "source": "operator"} and status["prompt"]["reason"] == "labelled"


def test_detector_label_counts_as_the_first_label(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "awaiting_label")
    state.on_event({"type": "label", "episode": 4, "success": False, "source": "detector", "state": "saving"})
    response = client.post("/api/label", json={"success": True, "episode": 4})
    assert response.status_code == 409 and "by detector" in response.get_json()["error"] and graph.events == []
    # A restarted episode manager numbers from 0 again: a new start of a number forgets its old label.
    state.on_event({"type": "start", "state": "running", "episode": 4})
    state.on_event({"type": "state", "state": "awaiting_label", "episode": 4})
    assert client.post("/api/label", json={"success": True, "episode": 4}).status_code == 200


def test_conflicting_labels_sent_at_once_one_wins(rig):
    client, state, graph, _, clock = rig
    app = client.application
    _live(state, clock, "awaiting_label")
    graph.publish_delay_s = 0.05
    for episode in range(4, 9):
        state.on_event({"type": "start", "state": "running", "episode": episode})
        state.on_event({"type": "state", "state": "awaiting_label", "episode": episode})
        barrier, statuses = threading.Barrier(2), {}

        def send(success, episode=episode, barrier=barrier, statuses=statuses):
            page = _page_client(app)
            barrier.wait()
            statuses[success] = page.post("/api/label", json={"success": success, "episode": episode}).status_code

        threads = [threading.Thread(target=send, args=(success,)) for success in (True, False)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses.values()) == [200, 409], statuses
        winner = next(success for success, code in statuses.items() if code == 200)
        announced = [fields for kind, fields in graph.events if kind == "label" and fields["episode"] == episode]
        assert announced == [{"success": winner, "source": "operator", "episode": episode}]
        assert client.get("/api/status").get_json()["episode_label"]["success"] is winner


@pytest.mark.parametrize(
    "body, error",
    [
        ('{"success": "yes", "episode": 4}', "must be bool"),
        ('{"success": 1, "episode": 4}', "must be bool"),
        ('{"success": true, "episode": "4"}', "must be int"),
        ('{"success": true}', "missing field 'episode'"),
        ("{}", "missing field"),
        ('{"success": true, "episode": 4, "extra": 1}', "unknown field"),
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
    assert client.post("/api/reboot_motors").status_code == 409
    state.on_event({"type": "state", "state": "waiting_for_reset"})
    assert client.post("/api/home").status_code == 200
    assert client.post("/api/reboot_motors").status_code == 200
    assert client.post("/api/estop", data="garbage").status_code == 200  # never refused for form
    assert client.post("/api/estop_clear").status_code == 200
    assert graph.services == ["robot/home", "robot/reboot_motors", "robot/estop", "robot/estop_clear"]
    graph.service_result = (False, "service robot/estop is not available")
    response = client.post("/api/estop")
    assert response.status_code == 503 and "not available" in response.get_json()["error"]


def test_end_now_ends_only_the_running_episode(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "waiting_for_reset")
    assert client.post("/api/end_now", json={"success": True, "episode": 0}).status_code == 409  # not running
    state.on_event({"type": "state", "state": "running", "episode": 3})
    assert client.post("/api/end_now", json={"success": True}).status_code == 400  # which episode?
    assert client.post("/api/end_now", json={"success": True, "episode": 2}).status_code == 409  # not this one
    response = client.post("/api/end_now", json={"success": True, "episode": 3})
    assert response.status_code == 200 and response.get_json()["episode"] == 3
    assert graph.events == [("end_now", {"success": True, "episode": 3, "source": "operator"})]


def test_estop_does_not_need_the_learner(rig):
    client, state, graph, _, clock = rig
    # No learner stats ever arrived (learner down): e-stop still reaches the control node.
    assert client.post("/api/estop").status_code == 200 and graph.services == ["robot/estop"]


def test_episode_list_thumbnails_and_relabel(rig):
    client, state, graph, store, clock = rig
    _live(state, clock)
    episodes = client.get("/api/episodes?limit=2").get_json()
    assert [e["episode_id"] for e in episodes] == ["online_00002", "online_00001"]
    assert client.get("/api/episodes?limit=10").get_json()[-1]["kind"] == "demo"
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
    for path in ("/api/status", "/api/camera.jpg", "/api/curve", "/api/episodes"):
        response = client.get(path)
        assert response.status_code == 401 and "token" in response.get_json()["error"], path
    # A browser without the token gets a login form, not JSON; a wrong token says so.
    login = client.get("/")
    assert login.status_code == 401 and login.mimetype == "text/html"
    assert b'<form id="login"' in login.data and b'name="token"' in login.data and b"btn-estop" not in login.data
    assert b"wrong" in client.get("/?token=nope").data
    assert client.get("/static/operator.css").status_code == 200  # the login form's style
    assert client.post("/api/estop").status_code == 401 and graph.services == []
    assert client.get("/api/status", headers={"X-Operator-Token": "s3cret"}).status_code == 200
    assert client.get("/api/status", headers={"X-Operator-Token": "wrong"}).status_code == 401
    page = client.get("/?token=s3cret")  # the page sets a cookie so its own requests carry the token
    assert page.status_code == 200 and "operator_token=s3cret" in page.headers["Set-Cookie"]
    assert client.get("/api/status").status_code == 200
    # Scripts: the token header is also the custom header a state change needs.
    assert client.post("/api/estop", headers={"X-Operator-Token": "s3cret"}).status_code == 200
    assert client.post("/api/estop").status_code == 403  # the cookie alone is not enough
    assert graph.services == ["robot/estop"]
    # Any host is fine with a token (the token is the guard).
    assert client.get("/api/status", headers={"Host": "robot-pc.lab:8080", "X-Operator-Token": "s3cret"}).status_code == 200


def test_cross_site_requests_are_refused_and_change_nothing(rig):
    client, state, graph, _, clock = rig
    _live(state, clock, "waiting_for_reset")
    state.on_status({"estopped": True, "holding": True, "last_error": ""})
    plain = client.application.test_client()  # sends no X-Operator-Request, like a foreign page
    foreign = {"Origin": "http://evil.example"}
    refused = [
        client.post("/api/home", headers=foreign),
        client.post("/api/estop_clear", headers={"Origin": "null"}),  # a file:// page
        client.post("/api/estop_clear", headers={"Referer": "http://evil.example/page.html"}),
        client.post("/api/pause", headers={"Origin": "http://localhost:9999"}),  # another port is another origin
        # A plain HTML form or a no-cors fetch: same-looking body, no custom header.
        plain.post("/api/estop_clear", data={"x": "1"}, headers={"Origin": "http://evil.example"}),
        plain.post("/api/estop_clear", data={"x": "1"}),
        plain.post("/api/reset_done", data="", content_type="text/plain"),
        plain.post("/api/estop"),
    ]
    for response in refused:
        assert response.status_code == 403 and response.is_json
        assert "cross-origin" in response.get_json()["error"] or REQUEST_HEADER in response.get_json()["error"]
    assert graph.events == [] and graph.services == []
    # The page's own requests pass: same origin (or no Origin at all, as from curl) plus the header.
    assert client.post("/api/home", headers={"Origin": "http://localhost"}).status_code == 200
    assert client.post("/api/estop_clear", headers={"Referer": "http://localhost/"}).status_code == 200
    assert client.post("/api/reset_done").status_code == 200
    assert graph.services == ["robot/home", "robot/estop_clear"] and graph.events == [("reset_done", {"source": "operator"})]
    # Reads stay open to the page, but not to a DNS-rebinding name when there is no token.
    assert client.get("/api/status").status_code == 200
    rebound = plain.get("/api/status", headers={"Host": "evil.example:5000"})
    assert rebound.status_code == 403 and "localhost" in rebound.get_json()["error"]
    assert client.get("/api/status", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert client.get("/api/status", headers={"Host": "[::1]:8080"}).status_code == 200


def _files(directory):
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_demonstrations_are_read_only(rig):
    client, state, graph, store, clock = rig
    _live(state, clock)
    demo_dir = store.episodes_dir / "demo_00000"
    before, index_before = _files(demo_dir), (store.root / "index.json").read_bytes()
    response = client.post("/api/episodes/demo_00000/label", json={"label": "failure"})
    assert response.status_code == 403 and "demonstration" in response.get_json()["error"]
    assert graph.events == []  # the learner never hears of it: buffer and disk stay as they are
    assert _files(demo_dir) == before and (store.root / "index.json").read_bytes() == index_before
    with pytest.raises(PermissionError, match="read-only"):  # nor can any other caller of the store
        store.relabel("demo_00000", "failure", final_reward=-1.0)
    assert _files(demo_dir) == before


def test_prompt_says_what_to_do_and_why_the_run_is_held(rig):
    client, state, graph, _, clock = rig

    def prompt():
        return client.get("/api/status").get_json()["prompt"]

    state.on_status({"estopped": False})
    state.on_image(np.zeros((8, 8, 3), np.uint8))
    state.on_stats({"phase": "offline", "offline_progress": 0.45})
    assert prompt()["reason"] == "offline" and "45 %" in prompt()["text"]
    _live(state, clock, "waiting_for_reset")
    assert prompt() == {
        "level": "action", "reason": "reset",
        "text": "Reset the scene for episode 4 (“put the cup on the drying rack”), then press Reset done (R).",
    }
    state.on_event({"type": "state", "state": "running", "episode": 4})
    assert prompt()["reason"] == "running" and "E-STOP" in prompt()["text"]
    state.on_event({"type": "state", "state": "awaiting_label", "episode": 4})
    assert prompt()["level"] == "action" and "Success (S) or Failure (F)" in prompt()["text"]
    # E-stop (the latched robot/safety state): the episode was aborted; once cleared, the arm goes home
    # before the next episode, and the page says why it waits (the latched episode/state).
    state.on_event({"type": "aborted", "episode": 4, "reason": "estop"})
    clock.now += 0.1
    state.on_safety({"state": "held", "reasons": ["estop"], "fault": ""})
    state.on_episode_state({"state": "waiting_for_reset", "episode": 5, "held": "arm held: estop (clear it on the page)"})
    assert prompt()["level"] == "danger" and prompt()["reason"] == "estop" and "aborted" in prompt()["text"]
    clock.now += 0.1
    state.on_safety({"state": "ok", "reasons": [], "fault": ""})
    state.on_episode_state({"state": "waiting_for_reset", "episode": 5, "held": "the arm is going home after an aborted episode"})
    assert prompt() == {"level": "held", "reason": "homing", "text": "Held: the arm is going home after an aborted episode."}
    state.on_episode_state({"state": "ready", "episode": 5, "held": "paused by the operator (resume to continue)"})
    assert prompt()["reason"] == "paused" and "Resume (P)" in prompt()["text"]
    state.on_event({"type": "resume", "source": "operator"})
    state.on_episode_state({"state": "ready", "episode": 5, "held": ""})
    state.on_stats({"phase": "online", "catching_up": True, "warmup_critic_updates": 120})
    assert prompt()["reason"] == "catching_up" and "120 updates" in prompt()["text"]
    state.on_stats({"phase": "online"})
    assert prompt()["reason"] == "ready"
    state.on_status({"estopped": False, "held_reasons": ["motor_error"], "fault": "wrist_rotate overload"})
    assert prompt() == {
        "level": "danger", "reason": "robot_held",
        "text": "Arm held: motor error: wrist_rotate overload. Check the arm, then press Reboot motors.",
    }
    codes = {w["code"]: w["text"] for w in client.get("/api/status").get_json()["warnings"]}
    assert codes["held"] == "arm held: motor error" and codes["fault"] == "robot fault: wrist_rotate overload"
    state.on_status({"estopped": False, "held_reasons": ["watchdog"]})  # holding still between episodes is normal
    assert prompt()["reason"] == "ready"
    clock.now += 10.0
    state.on_status({"estopped": False})
    state.on_image(np.zeros((8, 8, 3), np.uint8))
    assert prompt()["reason"] == "learner_lost" and "restarting" in prompt()["text"]


def test_teleop_endpoint_checks_and_forwards_the_operators_action(rig):
    client, state, graph, _, clock = rig
    headers = {"X-Operator-Request": "1", "Origin": "http://localhost"}
    ok = client.post("/api/teleop", json={"action": [0, 0, 1.5, 0, 0, 0, -1], "takeover": True}, headers=headers)
    assert ok.status_code == 200
    assert graph.events[-1] == ("teleop", {"action": [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0], "takeover": True})
    for bad in ({"action": [0] * 6, "takeover": True}, {"action": [0, 0, 0, 0, 0, 0, "x"], "takeover": True},
                {"action": [0] * 7}, {"action": [0] * 7, "takeover": 1}):
        assert client.post("/api/teleop", json=bad, headers=headers).status_code == 400, bad
    assert client.post("/api/teleop", json={"action": [0] * 7, "takeover": False},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert len([e for e in graph.events if e[0] == "teleop"]) == 1


def test_episode_replay_serves_steps_sources_q_and_stored_frames(rig, tmp_path):
    import cv2

    from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_POLICY

    client, _, _, store, _ = rig
    frames = np.stack([np.full((16, 16, 3), 40 * t, np.uint8) for t in range(4)])
    episode = EpisodeData(np.zeros((4, 7), np.float32), np.array([[0.1] * 7, [0.5] * 7, [-0.25] * 7], np.float32),
                          np.array([-1.0, -1.0, 0.0], np.float32), True, frames,
                          sources=np.array([SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_POLICY], np.uint8),
                          q_values=np.array([-3.5, -2.0, -0.5], np.float32))
    store.save(EpisodeRecord("online_00007", "online", True, "success", "operator", 3, 4, "h", "cup_to_rack",
                             intervention_steps=1), episode)
    replay = client.get("/api/episodes/online_00007/replay").get_json()
    assert replay["steps"] == 3 and replay["frames"] == 4 and replay["label_source"] == "operator"
    assert replay["sources"] == ["policy", "intervention", "policy"]
    assert replay["q_values"] == [-3.5, -2.0, -0.5] and replay["rewards"] == [-1.0, -1.0, 0.0]
    assert replay["actions"][1] == [0.5] * 7
    jpeg = client.get("/api/episodes/online_00007/frames/2.jpg")
    assert jpeg.status_code == 200 and jpeg.mimetype == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), cv2.IMREAD_COLOR)
    assert abs(int(decoded.mean()) - 80) <= 2  # frame 2 as stored, not another one
    assert client.get("/api/episodes/online_00007/frames/4.jpg").status_code == 404
    # Episodes stored without frames or Q (older stores, demonstrations): the steps still replay.
    plain = client.get("/api/episodes/online_00001/replay").get_json()
    assert plain["frames"] == 0 and plain["q_values"] is None and plain["sources"] == ["policy"] * 3
    assert client.get("/api/episodes/online_00099/replay").status_code == 404
    assert client.get("/api/episodes/..%2Fquarantine/replay").status_code == 404
    (store.episodes_dir / "online_00002" / "arrays.npz").write_bytes(b"damaged")
    damaged = client.get("/api/episodes/online_00002/replay")
    assert damaged.status_code == 422 and "cannot be read" in damaged.get_json()["error"]


def test_learner_stores_the_critics_q_of_each_executed_action(tmp_path):
    import torch

    from parl_robot.config import LearnerConfig, with_overrides
    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.rl.agent import PARLAgent

    cfg = with_overrides(LearnerConfig(), {"critic.hidden": 16, "critic.layers": 1, "policy_hidden": 16, "policy_blocks": 1})
    agent = PARLAgent(cfg, ObservationSpec(7), value_range=(-10.0, 0.0))
    rng = np.random.default_rng(0)
    episode = EpisodeData(rng.normal(size=(4, 7)).astype(np.float32), rng.uniform(-1, 1, (3, 7)).astype(np.float32),
                          -np.ones(3, np.float32), False)
    q = agent.q_of_actions(episode)
    with torch.no_grad():
        expected = agent.critic(agent.observation_tensors({"state": episode.states[:-1]}),
                                torch.as_tensor(episode.actions)).min(dim=0).values.numpy()
    assert q.shape == (3,) and np.allclose(q, expected)
    episode.q_values = q
    store = EpisodeStore(tmp_path)
    store.save(EpisodeRecord("online_00000", "online", False, "failure", "detector", 3, 0, "h", "cup_to_rack"), episode)
    assert np.allclose(store.load_episode("online_00000")[1].q_values, q)
    store.relabel("online_00000", "success", final_reward=0.0)  # a relabel keeps them
    assert np.allclose(store.load_episode("online_00000")[1].q_values, q)
    pytest.importorskip("h5py")
    from parl_robot.data.hdf5_export import export_hdf5, read_hdf5

    export_hdf5(store, tmp_path / "out.hdf5")  # the export carries them, and a record's None stays None
    [(record, exported, _)] = read_hdf5(tmp_path / "out.hdf5")
    assert np.allclose(exported.q_values, q) and record.detector_score is None and record.detector == ""


def test_reward_detector_switch_and_classifier_status(rig):
    client, state, graph, _, _ = rig
    assert client.get("/api/status").get_json()["classifier"] is None
    state.on_classifier({"version": 2, "trained_episodes": 30, "held_out": {"precision": 1.0, "recall": 0.8},
                         "judged": 5, "agreed": 4, "agreement": 0.8, "false_positives": 0,
                         "disagreements": [{"episode_id": "online_00003", "label": "success", "predicted": False, "score": 0.4}]})
    state.on_reward_detector({"detector": "positions", "error": ""})
    status = client.get("/api/status").get_json()
    assert status["classifier"]["agreement"] == 0.8 and status["reward_detector"]["detector"] == "positions"
    response = client.post("/api/reward_detector", json={"detector": "classifier"})
    assert response.status_code == 202 and graph.events[-1] == ("use_detector", {"detector": "classifier"})
    for bad in ({"detector": "aruco"}, {"detector": 1}, {}, {"detector": "classifier", "now": True}):
        assert client.post("/api/reward_detector", json=bad).status_code == 400
    assert len([e for e in graph.events if e[0] == "use_detector"]) == 1


def test_operator_facing_errors_say_exactly_what_is_wrong(rig):
    """The page shows these strings to the operator as they are (mutation testing found them unchecked)."""
    client, state, graph, _, clock = rig
    _live(state, clock, "awaiting_label")

    def error(response, status):
        assert response.status_code == status and response.get_json()["status"] == status
        return response.get_json()["error"]

    assert error(client.post("/api/label", data="{not json", content_type="application/json"), 400) == "body is not valid JSON"
    assert error(client.post("/api/label", json=[True]), 400) == "body must be a JSON object, got list"
    assert error(client.post("/api/label", json={"success": "yes", "episode": 4}), 400) == \
        'field \'success\' must be bool, got "yes"'
    assert error(client.post("/api/reset_done"), 409) == \
        "not possible while the episode is 'awaiting_label' (needs waiting_for_reset)"
    state.on_event({"type": "state", "state": "waiting_for_reset"})
    assert error(client.post("/api/discard"), 409) == \
        "not possible while the episode is 'waiting_for_reset' (needs running or awaiting_label)"
    state.on_event({"type": "state", "state": "running"})
    assert error(client.post("/api/home"), 409) == "the episode is running: discard it or e-stop first"
    clock.now += 60
    assert error(client.post("/api/episodes/online_00001/label", json={"label": "failure"}), 503) == \
        "the learner is not running: labels of stored episodes cannot be changed now"
    assert str(ApiError(409, "why")) == "why"  # logged tracebacks carry the message
    assert graph.events == []


def test_arm_services_wait_as_long_as_their_moves_take(rig):
    """Homing and rebooting take seconds (15 s wait); e-stop must answer fast (2 s); clearing, the default."""
    client, state, graph, _, clock = rig
    _live(state, clock, "waiting_for_reset")
    responses = [client.post(path) for path in ("/api/home", "/api/reboot_motors", "/api/estop", "/api/estop_clear")]
    assert [response.get_json() for response in responses] == [{"ok": True, "message": "done"}] * 4
    assert graph.service_timeouts == [15.0, 15.0, 2.0, 3.0]


def test_cross_origin_reasons_name_the_header_and_host_names_parse():
    assert cross_origin_reason("http://evil.example", None, "localhost:5000") == \
        "cross-origin request refused: Origin 'http://evil.example' is not this page (localhost:5000)"
    assert cross_origin_reason(None, "http://evil.example/x", "localhost:5000") == \
        "cross-origin request refused: Referer 'http://evil.example/x' is not this page (localhost:5000)"
    assert cross_origin_reason("http://[::1", None, "[::1]") is not None  # unparsable: refused, not an error
    assert cross_origin_reason("http://LOCALHOST:5000", None, "localhost:5000") is None
    assert cross_origin_reason(None, None, "localhost") is None  # curl: neither header
    assert host_name("robot-pc.lab:8080") == "robot-pc.lab" and host_name("[::1]:80") == "::1"
    assert host_name("") == "" and host_name("[::1") == ""


def test_a_token_less_page_off_loopback_says_how_to_set_one(tmp_path):
    with pytest.raises(ValueError) as raised:
        create_app(OperatorState("cup_to_rack", "x", 40), RecordingGraph(), EpisodeStore(tmp_path), host="0.0.0.0")
    assert str(raised.value) == ("operator page on host '0.0.0.0' (not loopback) needs a token: set ui.token in the "
                                 "config or the PARL_UI_TOKEN environment variable")


def test_the_page_of_one_of_several_arms_names_its_arm(tmp_path):
    state = OperatorState("cup_to_rack", "put the cup on the drying rack", 40)
    store = EpisodeStore(tmp_path / "arm1")
    pages = {"arm0": 8080, "arm1": 8081, "arm2": 8082}
    page = create_app(state, RecordingGraph(), store, arm="arm1", arm_pages=pages).test_client().get(
        "/", base_url="http://localhost:8081")
    assert b'<span id="arm" class="arm">arm1</span>' in page.data and b"<title>parl_robot \xc2\xb7 arm1" in page.data
    # The other arms' pages, on the host the browser reached this one at.
    links = re.findall(rb'<a class="other-arm" href="([^"]+)">(arm\d)</a>', page.data)
    assert links == [(b"http://localhost:8080/", b"arm0"), (b"http://localhost:8082/", b"arm2")]
    alone = create_app(state, RecordingGraph(), store).test_client().get("/")
    assert b'id="arm"' not in alone.data and b"other-arm" not in alone.data  # a one-arm graph's page is as before
