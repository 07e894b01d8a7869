"""The operator page in real headless Chromium.

First against the page's own server with a stand-in graph (fast, every state on demand): the
prompt line, highlighted label buttons, shortcuts from inside form controls, readable warnings,
the 400 px layout, the curve's legend and axis, and the token login. Then end to end against the
sim graph (separate processes over Fast DDS): the operator confirms the reset, watches the episode
run and end, labels it, and sees the stored label, step count and the success curve; then, with
the learner killed, Space (pressed in the relabel dropdown) still latches the arm. Screenshots go
to the test's tmp dir; each test prints where.
"""

import shutil
import threading
import time

import numpy as np
import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from operator_ui.app import create_app  # noqa: E402
from operator_ui.state import OperatorState  # noqa: E402
from parl_robot.data.episode_store import EpisodeRecord  # noqa: E402
from parl_robot.data.episode import EpisodeData  # noqa: E402
from test_operator_ui import RecordingGraph, _store_with_episodes  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium + chromium-driver (.ci/run installs them)"
)
OVERRIDES = {
    "episodes.num_online_episodes": 5,
    "episodes.auto_reset": False,  # the operator confirms resets on the page
    "episodes.auto_label": False,  # and labels every episode
    "learner.schedule.warmup_episodes": 1,
    "learner.schedule.offline_policy_steps": 40,
    "learner.schedule.offline_critic_steps": 20,
    "control.max_episode_steps": 10,
}


# WCAG relative luminance contrast of two computed CSS colours ("rgb(r, g, b)").
CONTRAST_JS = """
const lum = (css) => {
  const [r, g, b] = css.match(/[0-9.]+/g).slice(0, 3).map((v) => {
    const c = Number(v) / 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const style = getComputedStyle(arguments[0]);
const [a, b] = [lum(style.color), lum(style.backgroundColor)].sort((x, y) => y - x);
return (a + 0.05) / (b + 0.05);
"""


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _waiter(browser, tmp_path, default_timeout=10.0, log=lambda: ""):
    """`shot(name)` saves a screenshot in tmp_path; `wait_for(condition, what)` waits or fails with a
    screenshot and `log()` in the message."""

    def shot(name: str) -> None:
        browser.save_screenshot(str(tmp_path / f"{name}.png"))

    def wait_for(condition, what: str, timeout: float = default_timeout):
        try:
            return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: condition(d))
        except Exception:
            shot(f"timeout_{what.replace(' ', '_')}")
            raise AssertionError(f"timed out waiting for {what}{log()}") from None

    return shot, wait_for


class PageServer:
    """The page's Flask app on a free loopback port, fed by the test instead of the ROS graph."""

    def __init__(self, tmp_path, token=""):
        # Long timeouts: inputs fed once stay fresh (the lost-input warnings have their own tests).
        self.state = OperatorState("cup_to_rack", "put the cup on the drying rack", 40,
                                   camera_timeout_s=1e6, learner_timeout_s=1e6, control_timeout_s=1e6)
        self.graph = RecordingGraph()
        self.store = _store_with_episodes(tmp_path / "store")
        self.server = make_server("127.0.0.1", 0, create_app(self.state, self.graph, self.store, token=token), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.state.on_stats({"phase": "online", "policy_version": 3, "warning": ""})
        self.state.on_status({"estopped": False, "holding": False, "last_error": ""})
        self.state.on_image(np.full((64, 64, 3), 90, np.uint8))

    def close(self):
        self.server.shutdown()
        self.thread.join()


def test_prompt_labels_shortcuts_and_layout_in_chromium(tmp_path, browser):
    page = PageServer(tmp_path)
    state, graph = page.state, page.graph
    shot, wait_for = _waiter(browser, tmp_path)
    by_id = lambda element_id: browser.find_element(By.ID, element_id)  # noqa: E731
    print(f"screenshots in {tmp_path}")
    try:
        state.on_event({"type": "state", "state": "waiting_for_reset", "episode": 4})
        browser.get(page.url)
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "reset", "reset prompt")
        assert by_id("prompt").text.startswith("Reset the scene for episode 4")
        assert "attention" in by_id("btn-reset-done").get_attribute("class")
        assert not by_id("btn-success").is_enabled() and not by_id("btn-failure").is_enabled()
        shot("1_prompt_reset")

        state.on_event({"type": "state", "state": "awaiting_label", "episode": 4})
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "label", "label prompt")
        assert "Success (S) or Failure (F)" in by_id("prompt").text
        for button in ("btn-success", "btn-failure"):
            assert by_id(button).is_enabled() and "attention" in by_id(button).get_attribute("class")
        assert browser.execute_script(CONTRAST_JS, by_id("btn-success")) >= 4.5
        shot("2_prompt_label_highlighted")
        browser.find_element(By.TAG_NAME, "body").send_keys("s")
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "labelled", "labelled prompt")
        assert graph.events == [("label", {"success": True, "source": "operator", "episode": 4})]
        assert "attention" not in by_id("btn-success").get_attribute("class") and not by_id("btn-success").is_enabled()

        # While an episode runs, Failure (F) ends it now with that outcome.
        state.on_event({"type": "state", "state": "running", "episode": 5})
        wait_for(lambda d: by_id("btn-failure").is_enabled(), "failure button enabled while running")
        browser.find_element(By.TAG_NAME, "body").send_keys("f")
        wait_for(lambda d: len(graph.events) == 2, "the end-now request")
        assert graph.events[-1] == ("end_now", {"success": False, "episode": 5, "source": "operator"})

        # The relabel dropdown keeps its focus while polls come in and a new episode joins the list.
        state.on_event({"type": "state", "state": "running", "episode": 5})
        select = wait_for(lambda d: d.find_element(By.CSS_SELECTOR, 'select[data-relabel="online_00001"]'), "relabel select")
        browser.execute_script("arguments[0].focus()", select)
        episode = EpisodeData(np.zeros((2, 7), np.float32), np.zeros((1, 7), np.float32), np.zeros(1, np.float32), True)
        page.store.save(EpisodeRecord("online_00003", "online", True, "success", "operator", 1, 4, "h", "cup_to_rack", created=2000.0), episode)
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-episode="online_00003"]'), "new episode in list")
        time.sleep(1.5)  # several status and list polls
        assert browser.execute_script("return document.activeElement") == select
        # Letters do not change a focused dropdown (no silent relabel); Space e-stops from inside it.
        select.send_keys("s")
        assert select.get_attribute("value") == "failure"
        select.send_keys(Keys.SPACE)
        wait_for(lambda d: graph.services == ["robot/estop"], "e-stop from the focused select", timeout=5)
        assert browser.execute_script("return document.activeElement") == select and select.get_attribute("value") == "failure"
        assert not [kind for kind, _ in graph.events if kind == "relabel"]
        # Space on a focused button is the e-stop too, never that button's click.
        by_id("btn-pause").send_keys(Keys.SPACE)
        wait_for(lambda d: graph.services == ["robot/estop"] * 2, "e-stop from a focused button", timeout=5)
        time.sleep(0.3)
        assert [kind for kind, _ in graph.events] == ["label", "end_now", "estop", "estop"]  # no "pause", no "s" from the select

        state.on_event({"type": "estop", "source": "operator"})
        state.on_status({"estopped": True, "holding": True, "last_error": ""})
        banner = wait_for(lambda d: d.find_element(By.CSS_SELECTOR, '#warnings [data-code="estop"]'), "e-stop banner")
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "estop", "e-stop prompt")
        assert browser.execute_script(CONTRAST_JS, banner) >= 4.5
        assert browser.execute_script(CONTRAST_JS, by_id("prompt")) >= 4.5
        assert "attention" in by_id("btn-estop-clear").get_attribute("class")
        shot("3_estop")

        # The curve names its dots and line and numbers its episodes.
        legend = by_id("curve-legend").text
        assert "moving average" in legend and "warm-up" in legend and "online" in legend
        ticks = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#curve text.tick")]
        assert ticks[0] == "1" and "episode" in by_id("curve").text

        # 400 px wide: nothing sticks out sideways.
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 400, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(1.2)
        widths = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] == 400 and widths[1] <= widths[2], widths  # clientWidth: 400 less the scroll bar
        shot("4_width_400")
    finally:
        page.close()
    assert (tmp_path / "4_width_400.png").stat().st_size > 10_000


def test_episode_replay_scrubs_frames_sources_and_q_in_chromium(tmp_path, browser):
    from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_POLICY

    page = PageServer(tmp_path)
    shot, wait_for = _waiter(browser, tmp_path)
    by_id = lambda element_id: browser.find_element(By.ID, element_id)  # noqa: E731
    print(f"screenshots in {tmp_path}")
    frames = np.stack([np.full((32, 32, 3), (60 * t, 40, 200 - 50 * t), np.uint8) for t in range(4)])
    episode = EpisodeData(np.zeros((4, 7), np.float32), np.array([[0.1] * 7, [0.5] * 7, [-0.25] * 7], np.float32),
                          np.array([-1.0, -1.0, 0.0], np.float32), True, frames,
                          sources=np.array([SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_POLICY], np.uint8),
                          q_values=np.array([-3.5, -2.0, -0.5], np.float32))
    page.store.save(EpisodeRecord("online_00005", "online", True, "success", "operator", 3, 4, "h", "cup_to_rack",
                                  created=3000.0, intervention_steps=1), episode)
    try:
        browser.get(page.url)
        button = wait_for(lambda d: d.find_element(By.CSS_SELECTOR, 'button[data-replay="online_00005"]'), "replay button")
        button.click()
        wait_for(lambda d: by_id("replay").is_displayed() and by_id("replay-source").text == "policy", "replay open")
        assert "online_00005" in by_id("replay-title").text and "3 steps" in by_id("replay-title").text
        slider = by_id("replay-step")
        slider.send_keys(Keys.ARROW_RIGHT)  # step 2 of 3: the operator drove it
        wait_for(lambda d: by_id("replay-source").text == "intervention", "the intervention step")
        assert by_id("replay-q").text == "-2.000" and by_id("replay-action").text.startswith("0.50 0.50")
        assert by_id("replay-step-text").text == "2 of 3"
        wait_for(lambda d: d.execute_script("const f = arguments[0]; return f.complete && f.naturalWidth === 32", by_id("replay-frame")),
                 "the stored frame of step 2")
        assert by_id("replay-frame").get_attribute("src").endswith("/api/episodes/online_00005/frames/1.jpg")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#replay-trace rect.intervention")) == 1
        assert browser.find_elements(By.CSS_SELECTOR, "#replay-trace polyline")
        shot("replay_intervention_step")
        by_id("replay-close").click()
        wait_for(lambda d: not by_id("replay").is_displayed(), "replay closed")
        assert not [kind for kind, _ in page.graph.events]  # replaying changes nothing
    finally:
        page.close()


def test_aborted_episode_flow_and_learner_restart_banner_in_chromium(tmp_path, browser):
    page = PageServer(tmp_path)
    state, graph = page.state, page.graph
    shot, wait_for = _waiter(browser, tmp_path)
    by_id = lambda element_id: browser.find_element(By.ID, element_id)  # noqa: E731
    print(f"screenshots in {tmp_path}")
    try:
        state.on_event({"type": "state", "state": "running", "episode": 6})
        browser.get(page.url)
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "running", "running prompt")
        # A foreign client e-stops: the control node's latched safety state and the manager's abort arrive.
        state.on_safety({"state": "held", "reasons": ["estop"], "fault": ""})
        state.on_event({"type": "aborted", "episode": 6, "reason": "estop", "steps": 9})
        state.on_episode_state({"state": "waiting_for_reset", "episode": 7, "held": "arm held: estop (clear it on the page)"})
        episode = EpisodeData(np.zeros((10, 7), np.float32), np.zeros((9, 7), np.float32), np.full(9, -1.0, np.float32), False)
        page.store.save(EpisodeRecord("online_00003", "online", False, "aborted", "safety", 9, 3, "h", "cup_to_rack",
                                      created=3000.0, aborted=True, abort_reason="estop"), episode)
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "estop", "e-stop prompt")
        assert "aborted" in by_id("prompt").text and "never trained on" in by_id("prompt").text
        card = wait_for(lambda d: d.find_element(By.CSS_SELECTOR, '[data-episode="online_00003"]'), "aborted episode card")
        select = card.find_element(By.CSS_SELECTOR, "select")
        assert not select.is_enabled() and select.get_attribute("value") == "aborted" and "aborted (estop)" in card.text
        assert not by_id("btn-success").is_enabled()  # nothing to label: the frozen steps are not an episode
        shot("1_aborted_by_estop")
        # Cleared: the arm goes home before the next episode, and the page says so.
        state.on_safety({"state": "ok", "reasons": [], "fault": ""})
        state.on_episode_state({"state": "waiting_for_reset", "episode": 7, "held": "the arm is going home after an aborted episode"})
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "homing", "homing prompt")
        # The learner dies (no stats): the banner and the prompt say it is restarting.
        state.learner_timeout_s = 0.5
        state.stats_time = state.clock() - 5.0
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '#warnings [data-code="learner_lost"]'), "learner banner")
        wait_for(lambda d: by_id("prompt").get_attribute("data-reason") == "learner_lost", "learner prompt")
        assert "restarting" in by_id("prompt").text
        shot("2_learner_restarting")
        state.on_stats({"phase": "online", "policy_version": 3, "warning": ""})  # it is back
        wait_for(lambda d: not d.find_elements(By.CSS_SELECTOR, '#warnings [data-code="learner_lost"]'), "banner gone")
        assert graph.events == [] and graph.services == []
    finally:
        page.close()
    assert (tmp_path / "2_learner_restarting.png").stat().st_size > 10_000


def test_token_login_form_and_clean_address_bar_in_chromium(tmp_path, browser):
    page = PageServer(tmp_path, token="s3cret")
    shot, wait_for = _waiter(browser, tmp_path)
    print(f"screenshots in {tmp_path}")
    try:
        page.state.on_event({"type": "state", "state": "waiting_for_reset", "episode": 0})
        browser.get(page.url)
        field = browser.find_element(By.CSS_SELECTOR, "form#login input[name=token]")
        shot("login")
        field.send_keys("s3cret", Keys.ENTER)
        wait_for(lambda d: d.find_element(By.ID, "prompt").get_attribute("data-reason") == "reset", "page after login")
        assert "token" not in browser.current_url and browser.current_url == page.url
        browser.refresh()  # the cookie carries the token now
        wait_for(lambda d: d.find_element(By.ID, "prompt").get_attribute("data-reason") == "reset", "page after reload")
        browser.find_element(By.ID, "btn-pause").click()
        wait_for(lambda d: page.graph.events == [("pause", {"source": "operator"})], "pause with the cookie")
    finally:
        page.close()


def test_operator_runs_and_labels_an_episode_in_chromium(tmp_path, browser):
    pytest.importorskip("rclpy")
    from graph_harness import Graph, free_port

    port = free_port()
    print(f"screenshots in {tmp_path}")
    graph = Graph(tmp_path, OVERRIDES, ui_port=port)
    for name in graph.specs:
        graph.start(name)
    cfg, store, log = graph.cfg, graph.store, graph.log
    shot, wait_for = _waiter(browser, tmp_path, 60.0, lambda: f"; graph log tail:\n{log.getvalue()[-3000:]}")

    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                browser.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"operator page never came up:\n{log.getvalue()[-3000:]}") from None
                time.sleep(0.5)
        assert "cup_to_rack" in browser.title
        # The learner pre-trains, then the manager waits for the operator's reset.
        wait_for(lambda d: d.find_element(By.ID, "btn-reset-done").is_enabled(), "reset button", timeout=120)
        wait_for(lambda d: d.execute_script("return document.getElementById('camera').naturalWidth") > 0, "camera image")
        assert text("state") == "waiting_for_reset"
        wait_for(lambda d: text("prompt").startswith("Reset the scene"), "reset prompt")
        shot("1_waiting_for_reset")

        browser.find_element(By.ID, "btn-reset-done").click()
        wait_for(lambda d: text("state") == "running", "episode running", timeout=10)
        wait_for(lambda d: int(text("step").split("/")[0]) >= 3, "steps counting", timeout=10)
        shot("2_running")
        wait_for(lambda d: text("state") == "awaiting_label", "episode end", timeout=20)
        wait_for(lambda d: "Success (S) or Failure (F)" in text("prompt"), "label prompt")
        assert "attention" in browser.find_element(By.ID, "btn-success").get_attribute("class")
        shot("3_awaiting_label")
        assert browser.find_element(By.ID, "curve").get_attribute("data-points") == "0"

        browser.find_element(By.ID, "btn-success").click()  # the operator's label, not the detector's
        wait_for(lambda d: d.find_element(By.ID, "curve").get_attribute("data-points") == "1", "curve update")
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-episode="online_00000"]'), "episode in list")
        online = [r for r in store.records() if r["kind"] == "online"]
        assert len(online) == 1 and online[0]["label"] == "success" and online[0]["label_source"] == "operator"
        assert int(text("step").split("/")[0]) == online[0]["steps"]  # the page counts what the episode stores
        assert "1/1" in text("phase-rates")
        wait_for(lambda d: text("state") == "waiting_for_reset", "next reset", timeout=20)
        shot("4_labelled")

        # Correct the label from the episode list: the learner rewrites the stored episode.
        select = browser.find_element(By.CSS_SELECTOR, 'select[data-relabel="online_00000"]')
        select.find_element(By.CSS_SELECTOR, 'option[value="failure"]').click()
        wait_for(lambda d: store.records()[-1]["label"] == "failure", "relabel stored", timeout=15)
        _, episode = store.load_episode("online_00000")
        assert not episode.terminal and episode.rewards[-1] == cfg.reward.reward_bias
        wait_for(lambda d: "0/1" in text("phase-rates"), "curve after relabel")

        # The learner dies: the page says so, and Space, pressed in the relabel dropdown, still e-stops the arm.
        graph.kill("learner")
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '#warnings [data-code="learner_lost"]'), "learner warning", 20)
        wait_for(lambda d: "learner is not running" in text("prompt"), "learner prompt")
        select = browser.find_element(By.CSS_SELECTOR, 'select[data-relabel="online_00000"]')
        browser.execute_script("arguments[0].focus()", select)
        select.send_keys(Keys.SPACE)
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '#warnings [data-code="estop"]'), "e-stop latched", 10)
        assert "estop: ok" in text("message")
        wait_for(lambda d: text("prompt").startswith("E-STOP latched"), "e-stop prompt")
        shot("5_estop_without_learner")
    finally:
        graph.close()
    assert (tmp_path / "5_estop_without_learner.png").stat().st_size > 10_000


@pytest.mark.slow
def test_keyboard_takeover_is_stored_with_the_operators_actions_and_replayed_in_chromium(tmp_path, browser):
    """Issue 24's browser test: in the running sim graph the operator takes over with T, drives with W,
    hands back; the stored episode holds intervention-flagged steps with the executed actions, and
    the replay shows them."""
    pytest.importorskip("rclpy")
    from selenium.webdriver.common.action_chains import ActionChains
    from std_msgs.msg import String

    from graph_harness import Graph, free_port
    from parl_robot.data.episode import SOURCE_INTERVENTION
    from parl_robot.nodes import common

    port = free_port()
    overrides = {"learner.schedule.warmup_episodes": 2, "learner.schedule.offline_policy_steps": 20,
                 "learner.schedule.offline_critic_steps": 10, "control.max_episode_steps": 40,
                 "episodes.num_online_episodes": 3, "episodes.record_frames": True}
    graph = Graph(tmp_path, overrides, ui_port=port)
    executed: list[dict] = []
    graph.observer.node.create_subscription(String, common.ROBOT_EXECUTED,
                                            lambda m: executed.append(common.parse_json_object(m)), common.COMMAND_QOS)
    shot, wait_for = _waiter(browser, tmp_path, 60.0, lambda: f"; graph log tail:\n{graph.log.getvalue()[-3000:]}")
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
    print(f"screenshots in {tmp_path}")
    try:
        for name in graph.specs:
            graph.start(name)
        graph.wait_for(lambda: graph.observer.state() == "running" and len(executed) >= 3, 180, "an episode running")
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda d: text("state") == "running", "the page sees the episode")
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("t")  # take over
        wait_for(lambda d: text("btn-takeover").startswith("Hand back"), "take-over on the page", 10)
        ActionChains(browser).key_down("w").perform()  # hold W: +x
        graph.wait_for(lambda: sum(e.get("source") == "intervention" for e in executed) >= 5, 120, "intervention steps")
        shot("1_driving")
        ActionChains(browser).key_up("w").perform()
        body.send_keys("t")  # hand back
        graph.wait_for(lambda: executed[-1].get("source") == "policy", 120, "the policy acting again")
        graph.wait_for(lambda: any(r["intervention_steps"] > 0 for r in graph.store.records() if r["kind"] == "online"),
                       180, "the episode with interventions stored")

        record = next(r for r in graph.store.records() if r["kind"] == "online" and r["intervention_steps"] > 0)
        _, episode = graph.store.load_episode(record["episode_id"])
        operator = np.flatnonzero(episode.sources == SOURCE_INTERVENTION)
        assert len(operator) == record["intervention_steps"] >= 5
        pushing = [t for t in operator if episode.actions[t][0] > 0.5]
        assert pushing and all(abs(episode.actions[t][1]) < 1e-6 for t in pushing), episode.actions[operator]
        assert episode.images is not None and len(episode.images) == len(episode.states)  # episodes.record_frames
        assert episode.q_values is not None and len(episode.q_values) == len(episode.actions)

        button = wait_for(lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-replay="{record["episode_id"]}"]'),
                          "the episode's replay button")
        button.click()
        wait_for(lambda d: by_steps(d) == len(episode.actions), "replay loaded")
        slider = browser.find_element(By.ID, "replay-step")
        browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
                               slider, int(pushing[0]))
        wait_for(lambda d: text("replay-source") == "intervention", "the operator's step in the replay")
        assert text("replay-action").startswith(f"{episode.actions[pushing[0]][0]:.2f}")
        wait_for(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                            browser.find_element(By.ID, "replay-frame")), "the stored frame")
        shot("2_replay")
    finally:
        graph.close()


def by_steps(driver) -> int:
    title = driver.find_element(By.ID, "replay-title").text
    return int(title.split("·")[-1].split()[0]) if "steps" in title else -1
