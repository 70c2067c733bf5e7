"""The latent explorer in a headless Chromium: the page's JavaScript against JAX, its controls, and its layout at a
desktop's and a phone's size.

Two pages: the one built here from tiny models (tests/_explorer_build.py: digits, 2 seeds) and the committed
results/mnist/explorer/index.html, the page students open. Needs chromium, chromedriver and selenium
(``apt-get install chromium chromium-driver`` and ``pip install -e '.[test]'``); without them every test here skips
with that hint.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile

import numpy as np
import pytest

from _explorer_build import LATENT, MODELS, explorer_build
from _helpers import REPO
from ae_jax.explorer.page import MAX_PAGE_BYTES
from ae_jax.explorer.screenshot import HEADLESS_FLAGS, find_chromium

HINT = "install one with `apt-get install chromium chromium-driver` and `pip install selenium`"
COMMITTED = REPO / "results" / "mnist" / "explorer"
SIZES = {"desktop": (1400, 900), "phone": (390, 844)}
# The page paints 8-bit grey levels, and a decoded pixel within one level (1 / 255) of JAX's cannot be told from it.
# The page's decoder weights are float16 (computed in float32), which moves a pixel by up to about 2.4e-3 on the
# MNIST models (codes up to 2.5 spreads from the training mean); float16 everywhere moves it by up to 5e-3 (the
# decoder's first layers stay float32), int8 by up to 0.12.
PIXEL_TOL = 1 / 255


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
    for flag in (*HEADLESS_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000", "--hide-scrollbars"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(d, path, size: str = "desktop"):
    """Load the page at a viewport of exactly SIZES[size] (the phone's with touch input) and wait until ready."""
    from selenium.webdriver.support.ui import WebDriverWait
    w, h = SIZES[size]
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": size == "phone"})
    d.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": size == "phone", "maxTouchPoints": 5})
    d.get(path.resolve().as_uri())
    WebDriverWait(d, 60).until(lambda d: d.execute_script("return !!(window.explorer && window.explorer.ready)"))
    assert d.execute_script("return [innerWidth, innerHeight]") == [w, h]
    return d


@pytest.fixture
def page(driver, build):
    """The built page freshly loaded at the desktop size (its state as it opens); returns the driver."""
    return _open(driver, build["out"] / "index.html")


def state(d) -> dict:
    return d.execute_script("return window.explorer.state()")


def severe(d) -> list:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def _rects(d, selector: str) -> list[dict]:
    return d.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.getBoundingClientRect()"
                            ".toJSON())", selector)


def _drag(d, model: str, dim: int, dy: int, touch: bool) -> None:
    """Drag a model's black point on axis dim by dy pixels (negative: up), with the mouse or a finger."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    p = d.execute_script("return window.explorer.handlePosition(arguments[0], arguments[1])", model, dim)
    kind = interaction.POINTER_TOUCH if touch else interaction.POINTER_MOUSE
    actions = ActionBuilder(d, mouse=PointerInput(kind, "finger" if touch else "mouse"))
    ptr = actions.pointer_action
    ptr.move_to_location(int(p["x"]), int(p["y"])).pointer_down()
    for k in (1, 2, 3):
        ptr.move_to_location(int(p["x"]), int(p["y"] + dy * k / 3))
    ptr.pointer_up()
    actions.perform()


# ----------------------------------------------------------------------------- the built page: numbers and controls
def test_page_loads_and_shows_every_selected_input(page):
    assert severe(page) == []
    st = state(page)
    assert st["seed"] == 0 and set(st["models"]) == set(MODELS) and len(st["selected"]) == 4
    assert page.execute_script("return window.explorer.models") == list(MODELS)
    for m in MODELS:
        assert len(st["models"][m]["black"]) == LATENT and len(st["models"][m]["decoded"]) == 1024
        lines = page.find_elements("css selector", f"#plot-{m} polyline.line")
        assert sorted(e.get_attribute("data-input") for e in lines) == sorted(st["selected"])
        # No selected input's line hides under the black line: each one leaves it by 3 px or more somewhere.
        black = page.find_element("css selector", f"#black-{m}").get_attribute("points")
        by = np.array([[float(v) for v in pt.split(",")] for pt in black.split()])[:, 1]
        for e in lines:
            y = np.array([[float(v) for v in pt.split(",")] for pt in e.get_attribute("points").split()])[:, 1]
            assert np.abs(y - by).max() >= 3, e.get_attribute("data-input")


def test_decodes_and_codes_match_jax(page, build):
    _match_jax(page, json.loads((build["out"] / "reference.json").read_text()))


def _match_jax(d, ref: dict) -> None:
    """JAX's answers (reference.json) against the page's: decodes in pixel space within PIXEL_TOL; the codes the page
    draws for its own inputs within 1e-4 of each dimension's training spread (they were computed in float32 when the
    page was written); its int8 encoder, which reads only drawings, within 5 % of that spread (1 px or less on a
    plot spanning 6 spreads in 150 px or more)."""
    worst_img = 0.0
    for model, per_seed in ref.items():
        spread = d.execute_script("return window.explorer.spread(arguments[0])", model)
        for seed, r in per_seed.items():
            got = np.array(d.execute_script("return arguments[0].map(z => window.explorer.decode("
                                            "arguments[1], arguments[2], z))", r["z"], model, int(seed)))
            worst_img = max(worst_img, np.abs(got - np.array(r["images"])).max())
            sd = np.array(spread[int(seed)])[None, :]
            drawn = np.array(d.execute_script("return arguments[0].map(n => window.explorer.code("
                                              "arguments[1], arguments[2], n))", r["names"], model, int(seed)))
            assert (np.abs(drawn - np.array(r["codes"])) / sd).max() < 1e-4, (model, seed)
            codes = np.array(d.execute_script("return arguments[0].map(x => window.explorer.encode("
                                              "arguments[1], arguments[2], x))", r["inputs"], model, int(seed)))
            err = np.abs(codes - np.array(r["codes"])) / sd
            assert err.max() < 0.05, (model, seed, err.max())
    assert worst_img < PIXEL_TOL, worst_img
    assert severe(d) == []


def test_random_and_average_move_both_black_lines(page):
    before = state(page)
    page.find_element("css selector", "#random").click()
    after = state(page)
    for m in MODELS:
        a, b = after["models"][m], before["models"][m]
        assert a["black"] != b["black"]
        assert np.abs(np.array(a["decoded"]) - np.array(b["decoded"])).max() > 1e-4
        lo, hi = a["range"]
        assert all(lo <= v <= hi for v in a["black"])
    page.find_element("css selector", "#reset").click()
    again = state(page)
    for m in MODELS:
        np.testing.assert_allclose(again["models"][m]["black"], before["models"][m]["black"], rtol=0, atol=1e-12)


def test_seed_switch_changes_both_models(page):
    from selenium.webdriver.support.ui import Select
    before = state(page)
    Select(page.find_element("css selector", "#seed")).select_by_value("1")
    after = state(page)
    assert after["seed"] == 1
    b = {(l["input"], l["model"]): l["values"] for l in before["lines"]}
    assert {l["model"] for l in after["lines"]} == set(MODELS)
    assert all(b[(l["input"], l["model"])] != l["values"] for l in after["lines"])
    for m in MODELS:
        assert after["models"][m]["decoded"] != before["models"][m]["decoded"]
        redo = page.execute_script("return window.explorer.decode(arguments[0], 1, arguments[1])", m,
                                   after["models"][m]["black"])
        np.testing.assert_allclose(after["models"][m]["decoded"], redo, atol=1e-12)  # seed 1's decoder drew it


def test_drawing_on_the_pad_adds_a_line_to_both_plots(page):
    from selenium.webdriver.common.action_chains import ActionChains
    before = state(page)
    pad = page.find_element("css selector", "#pad")
    page.execute_script("arguments[0].scrollIntoView()", pad)
    chain = ActionChains(page).move_to_element_with_offset(pad, -10, -40).click_and_hold()
    for dx, dy in [(8, 10)] * 4 + [(0, 12)] * 3:
        chain = chain.move_by_offset(dx, dy)
    chain.release().perform()
    page.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    after = state(page)
    assert after["drawing"] and "drawing" in after["selected"] and "drawing" not in before["selected"]
    assert len(after["selected"]) == len(before["selected"]) + 1
    assert 5 < sum(after["drawingImage"]) < 1024 and max(after["drawingImage"]) <= 1
    for m in MODELS:  # each plot's dashed line is that model's code of the drawn image
        assert len(page.find_elements("css selector", f'#plot-{m} polyline.line[data-input="drawing"]')) == 1
        drawn = next(l for l in after["lines"] if l["input"] == "drawing" and l["model"] == m)
        code = page.execute_script("return window.explorer.encode(arguments[0], arguments[1], arguments[2])",
                                   m, after["seed"], after["drawingImage"])
        np.testing.assert_allclose(drawn["values"], code, rtol=0, atol=1e-12)
    page.find_element("css selector", "#pad-keep").click()
    kept = state(page)
    assert "drawing 1" in kept["inputs"] and "drawing 1" in kept["selected"] and not kept["drawing"]
    assert severe(page) == []


@pytest.mark.parametrize("size", list(SIZES))
def test_double_click_or_tap_on_a_line_decodes_that_input_with_both_models(driver, build, size):
    """A double-click on an input's line (one tap on the phone) puts both black lines on that input's codes."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    page = _open(driver, build["out"] / "index.html", size)
    st = state(page)
    target = st["selected"][1]
    plot = f"plot-{MODELS[0]}"
    # A point on the target's line where no other line lies on top of it, in client coordinates.
    at = page.execute_script("""
        const svg = document.getElementById(arguments[1]);
        const line = [...svg.querySelectorAll('polyline.hit')].find(l => l.dataset.input === arguments[0]);
        const p = line.points, m = svg.getScreenCTM();
        for (let i = 0; i + 1 < p.numberOfItems; i++) {
          for (const t of [0.5, 0.35, 0.65, 0.2, 0.8]) {
            const q = svg.createSVGPoint();
            q.x = p.getItem(i).x + t * (p.getItem(i + 1).x - p.getItem(i).x);
            q.y = p.getItem(i).y + t * (p.getItem(i + 1).y - p.getItem(i).y);
            const c = q.matrixTransform(m);
            const top = document.elementFromPoint(Math.round(c.x), Math.round(c.y));
            if (top && top.dataset && top.dataset.input === arguments[0]) return [Math.round(c.x), Math.round(c.y)];
          }
        }
        return null;""", target, plot)
    assert at is not None, "every point tried on the target's line is covered by another line"
    if size == "phone":
        actions = ActionBuilder(page, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
        actions.pointer_action.move_to_location(*at).pointer_down().pointer_up()
        actions.perform()
    else:
        actions = ActionBuilder(page)
        actions.pointer_action.move_to_location(*at)
        actions.perform()
        ActionChains(page).double_click().perform()
    after = state(page)
    for m in MODELS:  # both black lines are now the target's codes, and both images its decodes
        want = next(l["values"] for l in st["lines"] if l["input"] == target and l["model"] == m)
        np.testing.assert_allclose(after["models"][m]["black"], want, rtol=0, atol=1e-12, err_msg=m)
        assert after["models"][m]["decoded"] != st["models"][m]["decoded"]


def test_inverted_toggle(page):
    px = (f"return Array.from(document.getElementById('decoded-{MODELS[1]}').getContext('2d')"
          ".getImageData(2, 2, 1, 1).data)")
    inverted = page.execute_script(px)
    page.find_element("css selector", "#inverted").click()
    assert state(page)["inverted"] is False
    plain = page.execute_script(px)
    assert abs((inverted[0] + plain[0]) - 255) <= 1  # the same pixel, grey levels mirrored


# ----------------------------------------------------------------------------- layout, both pages, both sizes
@pytest.fixture(params=["built", "committed"])
def page_path(request, build):
    return build["out"] / "index.html" if request.param == "built" else COMMITTED / "index.html"


@pytest.mark.parametrize("size", list(SIZES))
def test_layout_fits_and_a_drag_changes_its_models_decode(driver, page_path, size):
    """Nothing wider than the screen; both plots and both decoded images on screen together as the page opens;
    dragging each model's point (a finger on the phone) changes that model's image while the other stays."""
    d = _open(driver, page_path, size)
    w, h = SIZES[size]
    assert d.execute_script("return document.documentElement.scrollWidth") <= w
    widest = d.execute_script("return Math.max(...[...document.body.querySelectorAll('*')].map("
                              "e => e.getBoundingClientRect().right))")
    assert widest <= w + 0.5, f"an element reaches x = {widest} on a {w} px wide screen"
    for sel in (".plot", ".decoded"):
        rects = _rects(d, sel)
        assert len(rects) == 2
        for r in rects:
            assert 0 <= r["top"] and r["bottom"] <= h and 0 <= r["left"] and r["right"] <= w, (sel, r)
    models = d.execute_script("return window.explorer.models")
    for i, m in enumerate(models):
        before = state(d)
        y = d.execute_script("return window.explorer.handlePosition(arguments[0], 0).y", m)
        box = _rects(d, f"#plot-{m}")[0]
        _drag(d, m, 0, -60 if y - box["top"] > 0.5 * box["height"] else 60, touch=size == "phone")
        after = state(d)
        a, b = after["models"][m], before["models"][m]
        assert a["black"][1:] == b["black"][1:] and abs(a["black"][0] - b["black"][0]) > 1e-3, m
        assert np.abs(np.array(a["decoded"]) - np.array(b["decoded"])).max() > 1e-3, m
        other = models[1 - i]
        assert after["models"][other]["decoded"] == before["models"][other]["decoded"]
        redo = d.execute_script("return window.explorer.decode(arguments[0], arguments[1], arguments[2])",
                                m, after["seed"], a["black"])
        np.testing.assert_allclose(a["decoded"], redo, atol=1e-12)  # what is drawn is the decoder's answer
    assert severe(d) == []


def test_committed_page_size_and_match_with_jax(driver):
    """The page students open: at most MAX_PAGE_BYTES, and its decodes against the JAX answers committed beside it."""
    path = COMMITTED / "index.html"
    assert path.stat().st_size <= MAX_PAGE_BYTES, f"{path.stat().st_size / 1e6:.2f} MB"
    d = _open(driver, path)
    _match_jax(d, json.loads((COMMITTED / "reference.json").read_text()))


def test_screenshot_of_the_page(build, tmp_path):
    from PIL import Image
    from ae_jax.explorer.screenshot import screenshot
    assert screenshot(build["out"] / "index.html", tmp_path / "shot.png", size=(1200, 800)) is None
    im = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert im.shape == (800, 1200) and im.std() > 10  # a page was drawn, not a blank window
