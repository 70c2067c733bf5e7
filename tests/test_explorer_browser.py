"""The latent explorer in a headless Chromium: the page's JavaScript against JAX, and its controls.

Needs chromium, chromedriver and selenium (``apt-get install chromium
chromium-driver`` and ``pip install -e '.[test]'``); without them every test
here skips with that hint.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile

import numpy as np
import pytest

from _explorer_build import LATENT, MODELS, explorer_build
from ae_jax.explorer.screenshot import HEADLESS_FLAGS, find_chromium

HINT = "install one with `apt-get install chromium chromium-driver` and `pip install selenium`"


def _missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed"
    if find_chromium() is None:
        return "no chromium on PATH"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on PATH"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"no headless browser ({_missing()}): {HINT}")


@pytest.fixture(scope="module")
def build():
    return explorer_build()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="ae_jax_chromium_")
    opts = webdriver.ChromeOptions()
    opts.binary_location = find_chromium()
    for flag in (*HEADLESS_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(driver, build):
    """The page freshly loaded (its state as it opens); returns the driver."""
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get((build["out"] / "index.html").resolve().as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return !!(window.explorer && window.explorer.ready)"))
    return driver


def state(d) -> dict:
    return d.execute_script("return window.explorer.state()")


def severe(d) -> list:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def test_page_loads_without_errors(page):
    assert severe(page) == []
    st = state(page)
    assert st["model"] == MODELS[0] and st["seed"] == 0 and len(st["black"]) == LATENT
    assert len(st["decoded"]) == 1024 and st["selected"]
    assert page.execute_script("return window.explorer.models") == list(MODELS)
    n_active = len(page.find_elements("css selector", "#plot polyline.line.active"))
    assert n_active == len(st["selected"])


def test_decode_and_encode_match_jax(page, build):
    ref = json.loads((build["out"] / "reference.json").read_text())
    worst_img = worst_code = 0.0
    for model, per_seed in ref.items():
        for seed, r in per_seed.items():
            got = np.array(page.execute_script("return arguments[0].map(z => window.explorer.decode("
                                               "arguments[1], arguments[2], z))", r["z"], model, int(seed)))
            worst_img = max(worst_img, np.abs(got - np.array(r["images"])).max())
            codes = np.array(page.execute_script("return arguments[0].map(x => window.explorer.encode("
                                                 "arguments[1], arguments[2], x))", r["inputs"], model, int(seed)))
            worst_code = max(worst_code, np.abs(codes - np.array(r["codes"])).max())
    assert worst_img < 1e-4 and worst_code < 1e-4, (worst_img, worst_code)
    assert severe(page) == []


def test_dragging_a_point_changes_the_decoded_image(page):
    from selenium.webdriver.common.action_chains import ActionChains
    before = state(page)
    handle = page.find_element("css selector", "#handle-0")
    y0 = page.execute_script("return window.explorer.handlePosition(0).y")
    target_dy = -80 if y0 > 250 else 80
    ActionChains(page).click_and_hold(handle).move_by_offset(0, target_dy // 2).move_by_offset(0, target_dy // 2) \
        .release().perform()
    after = state(page)
    assert after["black"][1:] == before["black"][1:]
    moved = after["black"][0] - before["black"][0]
    assert (moved > 0) == (target_dy < 0) and abs(moved) > 1e-3  # up on screen is a larger value
    assert np.abs(np.array(after["decoded"]) - np.array(before["decoded"])).max() > 1e-4
    redo = page.execute_script("return window.explorer.decode(arguments[0], arguments[1], arguments[2])",
                               after["model"], after["seed"], after["black"])
    np.testing.assert_allclose(after["decoded"], redo, atol=1e-12)  # what is drawn is the decoder's answer
    assert severe(page) == []


def test_random_draws_a_new_black_line_inside_the_axes(page):
    before = state(page)
    page.find_element("css selector", "#random").click()
    after = state(page)
    assert after["black"] != before["black"]
    lo, hi = after["range"]
    assert all(lo <= v <= hi for v in after["black"])
    assert np.abs(np.array(after["decoded"]) - np.array(before["decoded"])).max() > 1e-4


def test_model_switch_greys_one_model_and_colours_the_other(page):
    def drawn(cls):
        return {e.get_attribute("data-model") for e in page.find_elements("css selector", f"#plot polyline.{cls}")}
    assert drawn("active") == {MODELS[0]} and drawn("other") == {MODELS[1]}
    before = state(page)
    page.find_element("css selector", f"#model-{MODELS[1]}").click()
    after = state(page)
    assert after["model"] == MODELS[1]
    assert drawn("active") == {MODELS[1]} and drawn("other") == {MODELS[0]}
    assert after["decoded"] != before["decoded"]
    redo = page.execute_script("return window.explorer.decode(arguments[0], arguments[1], arguments[2])",
                               after["model"], after["seed"], after["black"])
    np.testing.assert_allclose(after["decoded"], redo, atol=1e-12)  # drawn by the newly chosen decoder
    was = {(l["input"], l["model"]): l["values"] for l in before["lines"]}
    assert len(after["lines"]) == len(was) > 0
    for line in after["lines"]:  # the same codes, now with the other model in colour
        assert line["active"] == (line["model"] == MODELS[1]) and len(line["values"]) == LATENT
        assert line["values"] == was[(line["input"], line["model"])], line


def test_seed_switch_changes_the_networks(page):
    from selenium.webdriver.support.ui import Select
    before = state(page)
    Select(page.find_element("css selector", "#seed")).select_by_value("1")
    after = state(page)
    assert after["seed"] == 1
    b = {(l["input"], l["model"]): l["values"] for l in before["lines"]}
    assert all(b[(l["input"], l["model"])] != l["values"] for l in after["lines"])


def test_drawing_on_the_pad_adds_a_line(page):
    from selenium.webdriver.common.action_chains import ActionChains
    before = state(page)
    pad = page.find_element("css selector", "#pad")
    chain = ActionChains(page).move_to_element_with_offset(pad, -10, -40).click_and_hold()
    for dx, dy in [(8, 10)] * 4 + [(0, 12)] * 3:
        chain = chain.move_by_offset(dx, dy)
    chain.release().perform()
    page.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    after = state(page)
    assert after["drawing"] and "drawing" in after["selected"] and "drawing" not in before["selected"]
    assert len(after["selected"]) == len(before["selected"]) + 1
    lines = page.find_elements("css selector", '#plot polyline.line.active[data-input="drawing"]')
    assert len(lines) == 1
    # The drawn line is the encoder's code of the drawn image.
    drawn = next(l for l in after["lines"] if l["input"] == "drawing" and l["active"])
    assert 5 < sum(after["drawingImage"]) < 1024 and max(after["drawingImage"]) <= 1
    code = page.execute_script("return window.explorer.encode(arguments[0], arguments[1], arguments[2])",
                               after["model"], after["seed"], after["drawingImage"])
    np.testing.assert_allclose(drawn["values"], code, rtol=0, atol=1e-12)
    page.find_element("css selector", "#pad-keep").click()
    kept = state(page)
    assert "drawing 1" in kept["inputs"] and "drawing 1" in kept["selected"] and not kept["drawing"]
    assert severe(page) == []


def test_double_click_on_a_line_snaps_the_black_line_to_it(page):
    from selenium.webdriver.common.action_chains import ActionChains
    st = state(page)
    target = next(l for l in st["lines"] if l["active"] and l["input"] != st["selected"][0])
    # A point on the target's line where no other line lies on top of it (which lines cross where depends on
    # the inputs earlier tests on this page added), as an offset from the plot's centre.
    off = page.execute_script("""
        const svg = document.getElementById('plot');
        const line = [...svg.querySelectorAll('polyline.hit')].find(l => l.dataset.input === arguments[0]);
        const p = line.points, m = svg.getScreenCTM(), r = svg.getBoundingClientRect();
        for (let i = 0; i + 1 < p.numberOfItems; i++) {
          for (const t of [0.5, 0.35, 0.65, 0.2, 0.8]) {
            const q = svg.createSVGPoint();
            q.x = p.getItem(i).x + t * (p.getItem(i + 1).x - p.getItem(i).x);
            q.y = p.getItem(i).y + t * (p.getItem(i + 1).y - p.getItem(i).y);
            const c = q.matrixTransform(m);
            const top = document.elementFromPoint(Math.round(c.x), Math.round(c.y));
            if (top && top.dataset && top.dataset.input === arguments[0])
              return [c.x - (r.left + r.width / 2), c.y - (r.top + r.height / 2)];
          }
        }
        return null;""", target["input"])
    assert off is not None, "every point tried on the target's line is covered by another line"
    ActionChains(page).move_to_element_with_offset(page.find_element("css selector", "#plot"), int(round(off[0])),
                                                   int(round(off[1]))).double_click().perform()
    after = state(page)
    became = [l["input"] for l in st["lines"] if np.allclose(l["values"], after["black"], rtol=0, atol=1e-12)]
    np.testing.assert_allclose(after["black"], target["values"], rtol=0, atol=1e-12, err_msg=(
        f"target {target['input']}; the black line now equals the line(s) of {became or 'no input'}"
        f"{' (unchanged)' if np.allclose(after['black'], st['black']) else ''}"))


def test_inverted_toggle(page):
    px = "return Array.from(document.getElementById('decoded').getContext('2d').getImageData(2, 2, 1, 1).data)"
    inverted = page.execute_script(px)
    page.find_element("css selector", "#inverted").click()
    assert state(page)["inverted"] is False
    plain = page.execute_script(px)
    assert abs((inverted[0] + plain[0]) - 255) <= 1  # the same pixel, grey levels mirrored


def test_screenshot_of_the_page(build, tmp_path):
    from PIL import Image
    from ae_jax.explorer.screenshot import screenshot
    assert screenshot(build["out"] / "index.html", tmp_path / "shot.png", size=(1200, 800)) is None
    im = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert im.shape == (800, 1200) and im.std() > 10  # a page was drawn, not a blank window
