"""The operator page's Flask app: one HTML page plus a small JSON API.

Access: every request is checked against the token when one is set (header `X-Operator-Token`,
query `token` or the cookie the page gets on first load; a browser without it gets a login form;
only the page's static CSS and script are served without it).
Without a token `create_app` serves loopback only, and answers only requests whose Host is a
loopback name (a DNS-rebinding page cannot reach it). Every POST must come from the page's own
origin: `Origin` (or `Referer` when there is no Origin) must name the request's Host, and the
request must carry the header `X-Operator-Request` (any value; the page's script sends it) or
`X-Operator-Token`. A cross-site HTML form or no-cors fetch cannot set such a header, so it gets
403. Scripts: `curl -X POST -H 'X-Operator-Request: 1' http://127.0.0.1:8080/api/pause`.
Malformed or unknown requests get a 4xx JSON error and change nothing.

API (all JSON unless noted):
  GET  /api/status                    episode state, step, reward, learner stats, robot status,
                                      warnings, and `prompt` (what the operator should do next)
  GET  /api/camera.jpg                newest camera frame (image/jpeg); 503 when there is none
  GET  /api/curve                     success per episode, moving average, per-phase rates
  GET  /api/episodes?limit=N          recent stored episodes (newest first) with labels
  GET  /api/episodes/<id>/thumbnail.jpg
  GET  /api/episodes/<id>/replay       per step: action, reward, who acted, the critic's Q of the executed
                                      action (when the learner stored it), and the number of frames
  GET  /api/episodes/<id>/frames/<t>.jpg   camera frame t (0 .. steps) of a stored episode
  POST /api/episodes/<id>/label       {"label": "success" | "failure"}: correct a stored episode's label
                                      (the learner relabels store + replay buffer); demonstrations
                                      are read-only (403)
  POST /api/teleop                    {"action": [7 numbers], "takeover": bool}: the operator drives (intervention)
  POST /api/reset_done                operator confirms the scene is reset; the episode starts
  POST /api/label                     {"success": bool, "episode": int}: label the episode that is
                                      awaiting a label (`episode` = the number /api/status shows).
                                      Another episode, or a second label that conflicts with the
                                      first (operator's or detector's), answers 409; a repeat of the
                                      same label answers 200 and announces nothing
  POST /api/end_now                   {"success": bool, "episode": int}: end the running episode now
                                      with that outcome (the episode manager saves it labelled so)
  POST /api/reward_detector           {"detector": "positions" | "classifier"}: switch the reward detector
                                      (the reward node loads the newest classifier; `reward_detector` in
                                      /api/status says what is in use, and why a switch failed)
  POST /api/discard | /api/pause | /api/resume | /api/home | /api/reboot_motors | /api/estop | /api/estop_clear
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
from typing import Protocol
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException

from operator_ui.state import OperatorState, success_curve
from parl_robot.data.episode import SOURCE_NAMES, SOURCE_POLICY
from parl_robot.data.episode_store import EpisodeStore, is_demonstration

TOKEN_HEADER = "X-Operator-Token"
TOKEN_COOKIE = "operator_token"
REQUEST_HEADER = "X-Operator-Request"  # a header a cross-site form or no-cors fetch cannot send
MAX_BODY_BYTES = 4096


class GraphCommands(Protocol):
    """What the page may ask of the ROS graph (implemented by the bridge node)."""

    def publish_event(self, kind: str, **fields) -> None: ...

    def call_service(self, name: str, timeout_s: float = 3.0) -> tuple[bool, str]: ...

    def publish_teleop(self, action: list[float], takeover: bool) -> None: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets ("" when unparsable)."""
    try:
        return urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        return ""


def cross_origin_reason(origin: str | None, referer: str | None, host_header: str) -> str | None:
    """Why a state-changing request is not from the page's own origin, or None when it is (or
    when it comes from a client that sends neither header, such as curl: it cannot be a forged
    browser request, and the custom header is still required)."""
    source, what = (origin, "Origin") if origin else (referer, "Referer")
    if not source:
        return None
    try:
        netloc = urlsplit(source).netloc
    except ValueError:
        netloc = ""
    if not netloc or netloc.lower() != host_header.lower():
        return f"cross-origin request refused: {what} {source!r} is not this page ({host_header})"
    return None


def create_app(state: OperatorState, graph: GraphCommands, store: EpisodeStore, token: str = "", host: str = "127.0.0.1",
               arm: str = "", arm_pages: dict[str, int] | None = None) -> Flask:
    """The page's app; `arm` names the arm this page serves when one learner serves several (arms:=N),
    `arm_pages` every arm's page port (the header links to the other arms' pages, on the same host)."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"operator page on host {host!r} (not loopback) needs a token: set ui.token in the config "
            "or the PARL_UI_TOKEN environment variable"
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    # ----- guards ----------------------------------------------------------------------------
    @app.before_request
    def check_access():
        if not token and not is_loopback(host_name(request.host)):
            return _error(403, f"Host {request.host!r} refused: without a token the page answers only to localhost / 127.0.0.1")
        if token and request.endpoint != "static":  # the page's CSS and script hold nothing secret
            offered = request.headers.get(TOKEN_HEADER) or request.args.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
            if not hmac.compare_digest(offered.encode(), token.encode()):
                if request.method == "GET" and request.path == "/":
                    return Response(render_template("login.html", wrong=bool(offered)), status=401)
                return _error(401, "missing or wrong operator token (header X-Operator-Token or ?token=)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            reason = cross_origin_reason(request.headers.get("Origin"), request.headers.get("Referer"), request.host)
            if reason:
                return _error(403, reason)
            if not (request.headers.get(REQUEST_HEADER) or request.headers.get(TOKEN_HEADER)):
                return _error(
                    403,
                    f"refused: a state-changing request needs the header {REQUEST_HEADER} (the operator page sends it; "
                    f"scripts add -H '{REQUEST_HEADER}: 1'), so that other web pages cannot send it",
                )
        return None

    @app.errorhandler(ApiError)
    def api_error(err: ApiError):
        return _error(err.status, err.message)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return _error(err.code or 500, err.description or err.name)

    def body(allowed: dict[str, type], required: tuple[str, ...] = ()) -> dict:
        """The JSON object of a POST: empty is {}; anything else must be an object of allowed keys."""
        raw = request.get_data(cache=True)
        if not raw.strip():
            data = {}
        else:
            try:
                data = json.loads(raw)
            except ValueError:
                raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"body must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ApiError(400, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        for key in required:
            if key not in data:
                raise ApiError(400, f"missing field '{key}'")
        for key, value in data.items():
            if type(value) is not allowed[key]:  # bool is not int and 1 is not True here
                raise ApiError(400, f"field '{key}' must be {allowed[key].__name__}, got {json.dumps(value)}")
        return data

    def require_state(*states: str) -> None:
        current = state.snapshot()["episode_state"]
        if current not in states:
            raise ApiError(409, f"not possible while the episode is '{current}' (needs {' or '.join(states)})")

    def require_learner() -> None:
        if not state.learner_alive():
            raise ApiError(503, "the learner is not running: labels of stored episodes cannot be changed now")

    # ----- page and reads --------------------------------------------------------------------
    @app.get("/")
    def index():
        # Links to the other arms' pages: the host the browser used for this page, each arm's port.
        hostname = host_name(request.host)
        hostname = f"[{hostname}]" if ":" in hostname else hostname  # IPv6
        others = [(name, f"{request.scheme}://{hostname}:{port}/") for name, port in (arm_pages or {}).items() if name != arm]
        response = Response(render_template("index.html", task=state.task, instruction=state.instruction, arm=arm,
                                            other_arms=others))
        if token and request.args.get("token"):
            response.set_cookie(TOKEN_COOKIE, request.args["token"], httponly=True, samesite="Strict")
        return response

    @app.get("/api/status")
    def status():
        return jsonify(state.snapshot())

    @app.get("/api/camera.jpg")
    def camera():
        jpeg = state.latest_jpeg()
        if jpeg is None:
            raise ApiError(503, "no camera image yet")
        return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/curve")
    def curve():
        return jsonify(success_curve(store.records()))

    @app.get("/api/episodes")
    def episodes():
        limit_text = request.args.get("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 500:
            raise ApiError(400, f"limit must be an integer in 1..500, got {limit_text!r}")
        records = sorted(store.records(), key=lambda r: r.get("created", 0.0), reverse=True)[: int(limit_text)]
        keys = ("episode_id", "kind", "phase", "success", "label", "label_source", "steps", "policy_version", "created",
                "aborted", "abort_reason")
        return jsonify(
            [
                {**{key: record.get(key) for key in keys}, "has_thumbnail": store.thumbnail_path(record["episode_id"]) is not None}
                for record in records
                if isinstance(record.get("episode_id"), str)
            ]
        )

    @app.get("/api/episodes/<episode_id>/thumbnail.jpg")
    def thumbnail(episode_id: str):
        path = store.thumbnail_path(episode_id)
        if path is None:
            raise ApiError(404, f"no thumbnail for episode '{episode_id}'")
        return send_file(path, mimetype="image/jpeg")

    @app.get("/api/episodes/<episode_id>/replay")
    def replay(episode_id: str):
        if store.episode_dir(episode_id) is None:
            raise ApiError(404, f"no stored episode '{episode_id}'")
        try:
            record, episode = store.load_episode(episode_id, with_images=False)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ApiError(422, f"episode '{episode_id}' cannot be read: {err}")
        steps = len(episode.actions)
        sources = episode.sources if episode.sources is not None else [SOURCE_POLICY] * steps
        return jsonify(
            episode_id=episode_id, kind=record.kind, label=record.label, label_source=record.label_source,
            success=record.success, aborted=record.aborted, steps=steps, frames=store.frame_count(episode_id),
            actions=[[round(float(v), 4) for v in action] for action in episode.actions],
            rewards=[float(r) for r in episode.rewards],
            sources=[SOURCE_NAMES.get(int(s), "unknown") for s in sources],
            q_values=None if episode.q_values is None else [round(float(q), 4) for q in episode.q_values],
        )

    @app.get("/api/episodes/<episode_id>/frames/<int:index>.jpg")
    def frame(episode_id: str, index: int):
        jpeg = store.frame_jpeg(episode_id, index)
        if jpeg is None:
            raise ApiError(404, f"episode '{episode_id}' has no frame {index}")
        return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    # ----- commands --------------------------------------------------------------------------
    @app.post("/api/episodes/<episode_id>/label")
    def relabel(episode_id: str):
        data = body({"label": str}, required=("label",))
        if data["label"] not in ("success", "failure"):
            raise ApiError(400, f"label must be 'success' or 'failure', got {data['label']!r}")
        record = next((r for r in store.records() if r.get("episode_id") == episode_id), None)
        if record is None:
            raise ApiError(404, f"no stored episode '{episode_id}'")
        if is_demonstration(record):
            raise ApiError(403, f"'{episode_id}' is a demonstration: demonstrations are read-only")
        if record.get("aborted"):
            raise ApiError(403, f"'{episode_id}' was aborted by a safety hold: it is kept for inspection, never labelled")
        require_learner()
        graph.publish_event("relabel", episode_id=episode_id, label=data["label"], source="operator")
        return jsonify(ok=True, episode_id=episode_id, label=data["label"]), 202

    @app.post("/api/teleop")
    def teleop():
        """The operator's action while they drive (sent at the control rate), or the hand-back."""
        data = body({"action": list, "takeover": bool}, required=("action", "takeover"))
        action = data["action"]
        if len(action) != 7 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                       for v in action):
            raise ApiError(400, "action must be 7 finite numbers in [-1, 1]")
        graph.publish_teleop([max(-1.0, min(1.0, float(v))) for v in action], data["takeover"])
        return jsonify(ok=True)

    @app.post("/api/reward_detector")
    def reward_detector():
        data = body({"detector": str}, required=("detector",))
        if data["detector"] not in ("positions", "classifier"):
            raise ApiError(400, f"detector must be 'positions' or 'classifier', got {data['detector']!r}")
        graph.publish_event("use_detector", detector=data["detector"])
        return jsonify(ok=True, detector=data["detector"]), 202

    @app.post("/api/reset_done")
    def reset_done():
        body({})
        require_state("waiting_for_reset")
        graph.publish_event("reset_done", source="operator")
        return jsonify(ok=True)

    @app.post("/api/label")
    def label():
        data = body({"success": bool, "episode": int}, required=("success", "episode"))
        outcome, message = state.claim_label(data["episode"], data["success"])
        if outcome == "refused":
            raise ApiError(409, message)
        if outcome == "new":
            graph.publish_event("label", success=data["success"], source="operator", episode=data["episode"])
        return jsonify(ok=True, action="label" if outcome == "new" else "already_labelled", episode=data["episode"])

    @app.post("/api/end_now")
    def end_now():
        """End the running episode now with the operator's outcome (it is saved with that label)."""
        data = body({"success": bool, "episode": int}, required=("success", "episode"))
        require_state("running")
        if data["episode"] != state.snapshot()["episode"]:
            raise ApiError(409, f"episode {data['episode']} is not the running one ({state.snapshot()['episode']})")
        graph.publish_event("end_now", success=data["success"], episode=data["episode"], source="operator")
        return jsonify(ok=True, episode=data["episode"])

    @app.post("/api/discard")
    def discard():
        body({})
        require_state("running", "awaiting_label")
        graph.publish_event("discard", source="operator")
        return jsonify(ok=True)

    @app.post("/api/pause")
    def pause():
        body({})
        graph.publish_event("pause", source="operator")
        return jsonify(ok=True)

    @app.post("/api/resume")
    def resume():
        body({})
        graph.publish_event("resume", source="operator")
        return jsonify(ok=True)

    def arm_service(name: str):
        """A control node service that moves or un-powers the arm: never during an episode."""
        body({})
        if state.snapshot()["episode_state"] == "running":
            raise ApiError(409, "the episode is running: discard it or e-stop first")
        return _service_result(graph.call_service(name, timeout_s=15.0))

    @app.post("/api/home")
    def home():
        return arm_service("robot/home")

    @app.post("/api/reboot_motors")
    def reboot_motors():
        return arm_service("robot/reboot_motors")

    @app.post("/api/estop")
    def estop():
        # No body check, no state check: an e-stop must never be refused for form (the origin
        # guard still applies: the page's own e-stop always passes it).
        ok, message = graph.call_service("robot/estop", timeout_s=2.0)
        graph.publish_event("estop", source="operator")
        return _service_result((ok, message))

    @app.post("/api/estop_clear")
    def estop_clear():
        body({})
        return _service_result(graph.call_service("robot/estop_clear"))

    return app


def _service_result(result: tuple[bool, str]):
    ok, message = result
    if not ok:
        return _error(503, message)
    return jsonify(ok=True, message=message)


def _error(status: int, message: str):
    response = jsonify(error=message, status=status)
    response.status_code = status
    return response
