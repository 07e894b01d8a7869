"""End to end in real headless Chromium against the sim graph (separate processes over Fast DDS).

The operator confirms the reset, watches the episode run and end, labels it, and sees the stored
label and the success curve update; then, with the learner killed, the e-stop still latches the
arm. Screenshots go to the test's tmp dir.
"""

import shutil
import time

import pytest

pytest.importorskip("rclpy")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from graph_harness import Graph, free_port  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian chromium + chromium-driver (.ci/run installs them)"
)
OVERRIDES = {
    "episodes.num_online_episodes": 5,
    "episodes.auto_reset": False,  # the operator confirms resets on the page
    "episodes.auto_label": False,  # and labels every episode
    "learner.warmup_episodes": 1,
    "learner.offline_policy_steps": 40,
    "learner.offline_critic_steps": 20,
    "control.max_episode_steps": 10,
}


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_operator_runs_and_labels_an_episode_in_chromium(tmp_path, browser):
    port = free_port()
    graph = Graph(tmp_path, OVERRIDES, ui_port=port)
    for name in graph.specs:
        graph.start(name)
    cfg, store, log = graph.cfg, graph.store, graph.log

    def shot(name: str) -> None:
        browser.save_screenshot(str(tmp_path / f"{name}.png"))

    def wait_for(condition, what: str, timeout: float = 60.0):
        try:
            return WebDriverWait(browser, timeout, poll_frequency=0.2).until(lambda d: condition(d))
        except Exception:
            shot(f"timeout_{what.replace(' ', '_')}")
            raise AssertionError(f"timed out waiting for {what}; graph log tail:\n{log.getvalue()[-3000:]}") from None

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
        shot("1_waiting_for_reset")

        browser.find_element(By.ID, "btn-reset-done").click()
        wait_for(lambda d: text("state") == "running", "episode running", timeout=10)
        wait_for(lambda d: int(text("step").split("/")[0]) >= 3, "steps counting", timeout=10)
        shot("2_running")
        wait_for(lambda d: text("state") == "awaiting_label", "episode end", timeout=20)
        shot("3_awaiting_label")
        assert browser.find_element(By.ID, "curve").get_attribute("data-points") == "0"

        browser.find_element(By.ID, "btn-success").click()  # the operator's label, not the detector's
        wait_for(lambda d: d.find_element(By.ID, "curve").get_attribute("data-points") == "1", "curve update")
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-episode="online_00000"]'), "episode in list")
        online = [r for r in store.records() if r["kind"] == "online"]
        assert len(online) == 1 and online[0]["label"] == "success" and online[0]["label_source"] == "operator"
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

        # The learner dies: the page says so, and the e-stop still reaches the arm.
        graph.kill("learner")
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '#warnings [data-code="learner_lost"]'), "learner warning", 20)
        browser.find_element(By.ID, "btn-estop").click()
        wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '#warnings [data-code="estop"]'), "e-stop latched", 10)
        assert "estop: ok" in text("message")
        shot("5_estop_without_learner")
    finally:
        graph.close()
    assert (tmp_path / "5_estop_without_learner.png").stat().st_size > 10_000
