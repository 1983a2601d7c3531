"""The real page in Debian's Chromium (Playwright): upload a photo and a zip, read what is visible, screenshot it.

Screenshots go to $BROWSER_SCREENSHOTS (default: the test's temp folder).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline
from tests.test_app import serve, write_photo, write_zip

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT = 90_000  # ms; a cold first analysis on a busy 2-core runner

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),  # one Chromium and one page server
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    yield page
    context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def url(settings_factory, tmp_path_factory) -> Iterator[str]:
    examples = tmp_path_factory.mktemp("examples")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_EXAMPLES_CACHE", str(examples / "cache"))  # lazily cached results go here
        with serve(settings_factory(), examples=[str(write_photo(examples / "wide.jpg", 200, 120))]) as (_, local, _):
            yield local


def test_photo_and_zip_through_the_page(page, url, shots, tmp_path):
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.get_by_role("button", name="Analyze photo")).to_be_visible()

    page.locator("#photo-input input[type=file]").set_input_files(write_photo(tmp_path / "car.jpg", 160, 96))
    expect(page.locator("#photo-input img")).to_be_visible()  # uploaded, previewed
    page.get_by_role("button", name="Analyze photo").click()
    expect(page.locator("#verdict")).to_contain_text("Damaged car")
    expect(page.locator("#confidences")).to_contain_text("damage")
    annotated = page.locator("#annotated img")
    expect(annotated).to_be_visible()
    page.wait_for_function("() => document.querySelector('#annotated img')?.naturalWidth === 160")
    expect(page.locator("#model-banner")).to_be_hidden()
    expect(page.locator("#damages")).to_contain_text("dent")  # the damages table: part, type, severity, ...
    expect(page.locator("#before-after img").first).to_be_visible()  # the before / after slider
    page.screenshot(path=shots / "photo-tab.png", full_page=True)

    page.locator("#photo-examples img").first.click()  # an example: analysed on first click, then cached
    page.wait_for_function("() => document.querySelector('#annotated img')?.naturalWidth === 200")
    expect(page.locator("#verdict")).to_contain_text("Damaged car")

    page.get_by_role("tab", name="Zip of photos").click()
    page.locator("#zip-input input[type=file]").set_input_files(write_zip(tmp_path / "photos.zip"))
    expect(page.locator("#zip-input")).to_contain_text(re.compile(r"photos\s*\.zip"))  # name and suffix: two spans
    page.get_by_role("button", name="Analyze zip").click()
    expect(page.locator("#zip-results")).to_contain_text("photos-results")
    link = page.locator("#zip-results a[href$='/photos-results.zip']")
    expect(link).to_be_visible()
    expect(page.locator("#zip-summary")).to_contain_text("3 damaged cars")
    expect(page.locator("#zip-summary")).to_contain_text("notes.txt")
    expect(page.locator("#gallery img")).to_have_count(3)
    expect(page.locator("#zip-report")).to_contain_text("report.html")  # the report to file, linked on its own
    expect(page.locator("#zip-vehicles")).to_contain_text("lot")  # vehicles.csv: the folder lot/ is one vehicle
    page.screenshot(path=shots / "zip-tab.png", full_page=True)

    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "downloaded.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        assert {"front.jpg", "side.png", "lot/rear.jpg", "report.csv", "summary.json"} <= set(zf.namelist())


def test_bad_segmenter_path_shows_a_banner(page, shots, monkeypatch, car_imagenet_yes, damage_yes):
    from playwright.sync_api import expect

    monkeypatch.setenv("CAR_MODEL", str(car_imagenet_yes))
    monkeypatch.setenv("DAMAGE_MODEL", str(damage_yes))
    monkeypatch.setenv("SEG_MODEL", "/nonexistent/seg-model.pt")
    with serve(pipeline.Settings.from_env()) as (_, url, _):
        page.goto(url)
        banner = page.locator("#model-banner")
        expect(banner).to_contain_text("segmenter model 'seg-model.pt'")  # its name only: no server paths
        expect(banner).to_contain_text("Set SEG_MODEL")
        expect(page.get_by_role("button", name="Analyze photo")).to_be_enabled()  # the app still works
        expect(page.locator("#photo-examples")).to_have_count(0)  # no examples: no examples block
        page.screenshot(path=shots / "model-banner.png", full_page=True)


WHOLE_PHOTO_JS = """() => {
    const img = document.querySelector('#annotated img'), block = document.querySelector('#annotated');
    const box = img.getBoundingClientRect(), outer = block.getBoundingClientRect();
    const label = block.querySelector('label, [data-testid=block-label]')?.getBoundingClientRect();
    const fit = getComputedStyle(img).objectFit, scale = Math.min(box.width / img.naturalWidth,
        fit === 'scale-down' ? 1 : Infinity, box.height / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;  // the photo as drawn in its box
    const left = box.left + (box.width - w) / 2, top = box.top + (box.height - h) / 2;
    return {fit, w, h, inside: left >= outer.left - 0.5 && top >= outer.top - 0.5 && left + w <= outer.right + 0.5
        && top + h <= outer.bottom + 0.5, belowLabel: !label || top >= label.bottom - 0.5};
}"""


def test_the_annotated_photo_is_whole_and_the_slider_follows_examples(page, url, tmp_path):
    """The annotated photo is drawn whole (no edge cut by its frame or hidden under its label); an example's
    verdict comes with the example's own before / after."""
    from playwright.sync_api import expect

    page.goto(url)
    page.locator("#photo-input input[type=file]").set_input_files(write_photo(tmp_path / "car.jpg", 800, 532))
    page.get_by_role("button", name="Analyze photo").click()
    page.wait_for_function("() => document.querySelector('#annotated img')?.naturalWidth === 800")
    drawn = page.evaluate(WHOLE_PHOTO_JS)
    assert drawn["fit"] in ("contain", "scale-down") and drawn["inside"] and drawn["belowLabel"], drawn
    assert abs(drawn["w"] / drawn["h"] - 800 / 532) < 0.01, drawn
    slider = "[...document.querySelectorAll('#before-after img')]"
    page.wait_for_function(f"() => {slider}.length >= 2 && {slider}.every(i => i.naturalWidth === 800)")

    page.locator("#photo-examples img").first.click()  # the example is 200 x 120
    page.wait_for_function("() => document.querySelector('#annotated img')?.naturalWidth === 200")
    expect(page.locator("#verdict")).to_contain_text("Damaged car")
    page.wait_for_function(
        f"() => {slider}.length >= 2 && {slider}.every(i => i.naturalWidth === 200 && i.naturalHeight === 120)"
    )


def test_several_photos_of_one_vehicle(page, url, tmp_path):
    from playwright.sync_api import expect

    page.goto(url)
    photos = [write_photo(tmp_path / "front.jpg", 160, 96, 1), write_photo(tmp_path / "rear.jpg", 120, 80, 2)]
    page.locator("#vehicle-input input[type=file]").set_input_files(photos)
    expect(page.locator("#vehicle-input")).to_contain_text("rear")
    page.get_by_role("button", name="Analyze vehicle").click()
    expect(page.locator("#vehicle-summary")).to_contain_text("Damaged vehicle")
    expect(page.locator("#vehicle-summary")).to_contain_text("2 of 2 photos")
    expect(page.locator("#vehicle-gallery img")).to_have_count(2)


def test_report_html_opens_with_the_vehicles(browser, monkeypatch, settings_factory, tmp_path, shots):
    """report.html as a person opens it: one section per vehicle first (a folder named like markup is text),
    then the per-photo sections."""
    from tests.test_vehicles import FLEET, _by_colour, _jpeg, zips

    monkeypatch.setattr("pipeline.batch.analyze_photos", _by_colour)  # known answers by photo colour
    entries = [(name, _jpeg(colour)) for name, colour in [*FLEET, ("<img src=x onerror=alert(1)>/a.jpg", FLEET[1][1])]]
    archive = zips.with_entries(tmp_path / "fleet.zip", entries)
    result = pipeline.process_zip(archive, tmp_path / "out", settings_factory())
    with zipfile.ZipFile(result.archive) as opened:
        report = tmp_path / "report.html"
        report.write_bytes(opened.read("report.html"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(report.as_uri())
    classes = page.locator("section").evaluate_all("sections => sections.map(s => s.className)")
    assert classes[:4] == ["vehicle"] * 4 and len(classes) == 4 + 8 and "vehicle" not in classes[4:], classes
    headings = page.locator("section.vehicle h2").all_inner_texts()
    assert "Vehicle <img src=x onerror=alert(1)>" in headings and not dialogs  # shown as text, never run
    page.screenshot(path=str(shots / "report-vehicles.png"), full_page=True)
    page.close()
