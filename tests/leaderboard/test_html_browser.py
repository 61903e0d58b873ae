"""The HTML board in a real headless browser (Debian chromium + chromedriver via selenium)."""

import json
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from saip_bench.leaderboard.render import write_boards
from tests.leaderboard.fakes import from_files, rec, three_methods

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# In CI (.ci/run installs the browser) a missing browser is a failure, never a silent skip.
IN_CI = bool(os.environ.get("CI"))
if not IN_CI:
    selenium = pytest.importorskip("selenium", reason="selenium (test extra) is not installed")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and not IN_CI,
    reason="needs Debian chromium + chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and DRIVER):
        pytest.fail("CI=true but chromium/chromedriver are not on PATH (.ci/run installs them with apt-get)")
    options = Options()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    yield driver
    driver.quit()


def column_values(driver, table_id: str, column: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".map(r => r.cells[arguments[1]].getAttribute('data-v'));",
        table_id,
        column,
    )


def test_page_renders_tables_and_plots(browser, tmp_path):
    records = [*three_methods(), rec("hap", "market1501", 85.0)]  # hap incomplete: sorts last
    write_boards(records, tmp_path)
    browser.get((tmp_path / "leaderboard.html").as_uri())
    assert browser.title == "saip-bench leaderboard"
    tables = browser.find_elements("css selector", "table.sortable")
    assert len(tables) == 1 + 3  # summary + one per dataset
    summary = browser.find_element("id", "summary-synthetic-fast")
    assert summary.is_displayed() and summary.size["width"] > 300
    assert len(summary.find_elements("css selector", "tbody tr")) == 4
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    assert len(images) == 2 and all(done and width > 100 and height > 100 for done, width, height in images)


def test_click_sorts_numeric_columns_both_ways_with_blanks_last(browser, tmp_path):
    records = [*three_methods(), rec("hap", "market1501", 85.0)]
    write_boards(records, tmp_path)
    browser.get((tmp_path / "leaderboard.html").as_uri())
    table = browser.find_element("id", "summary-synthetic-fast")
    headers = table.find_elements("css selector", "thead th")
    names = [h.text for h in headers]
    market = names.index("Market rank1 ↑")
    rank = names.index("mean rank ↓")
    headers[market].click()
    assert [float(v) for v in column_values(browser, "summary-synthetic-fast", market)] == [70, 80, 85, 90]
    assert headers[market].get_attribute("aria-sort") == "ascending"
    headers[market].click()
    assert [float(v) for v in column_values(browser, "summary-synthetic-fast", market)] == [90, 85, 80, 70]
    headers[rank].click()
    ranks = column_values(browser, "summary-synthetic-fast", rank)
    assert ranks[-1] == "" and [float(v) for v in ranks[:-1]] == sorted(float(v) for v in ranks[:-1])
    method = names.index("method")
    headers[method].click()
    assert column_values(browser, "summary-synthetic-fast", method) == ["dino", "hap", "mae", "saip"]


def visible_rows(driver, table_id: str) -> list[str]:
    """The method column of the table's rows that are displayed."""
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".filter(r => r.offsetParent !== null).map(r => r.getAttribute('data-method'));",
        table_id,
    )


def test_filters_hide_rows_by_method_backbone_and_track(browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    records = [*three_methods(), rec("saip", "market1501", 88.0, backbone="starnet_s3"),
               rec("saip", "market1501", 70.0, track="finetune")]
    write_boards(records, tmp_path)
    browser.get((tmp_path / "leaderboard.html").as_uri())
    summary, market = "summary-synthetic-fast", "synthetic-fast-market1501"
    assert sorted(visible_rows(browser, summary)) == ["dino", "mae", "saip", "saip"]
    Select(browser.find_element("id", "filter-method")).select_by_value("saip")
    assert visible_rows(browser, summary) == ["saip", "saip"]
    assert visible_rows(browser, market) == ["saip", "saip"]
    Select(browser.find_element("id", "filter-backbone")).select_by_value("starnet_s3")
    assert visible_rows(browser, market) == ["saip"]
    assert browser.execute_script(
        "return document.getElementById(arguments[0]).tBodies[0].querySelector('tr[data-backbone=vit_tiny]')"
        ".style.display;", market) == "none"
    Select(browser.find_element("id", "filter-method")).select_by_value("")
    Select(browser.find_element("id", "filter-backbone")).select_by_value("")
    finetune = browser.find_element("id", "board-synthetic-finetune")
    fast = browser.find_element("id", "board-synthetic-fast")
    assert fast.is_displayed() and finetune.is_displayed()
    Select(browser.find_element("id", "filter-track")).select_by_value("finetune")
    assert finetune.is_displayed() and not fast.is_displayed()  # the other track's board is hidden
    search = browser.find_element("id", "filter")
    Select(browser.find_element("id", "filter-track")).select_by_value("")
    search.send_keys("dino")
    assert visible_rows(browser, summary) == ["dino"]
    assert visible_rows(browser, "summary-synthetic-finetune") == []


def test_drill_down_opens_to_show_the_folded_columns(browser, tmp_path):
    records = [rec(m, "lip", v, task="parsing", metric="mIoU",
                   extra={"pixel_acc": 0.8, "mean_acc": 0.5, "IoU/hat": v / 2, "IoU/hair": v / 3})
               for m, v in (("saip", 0.42), ("dino", 0.40))]
    write_boards(records, tmp_path)
    browser.get((tmp_path / "leaderboard.html").as_uri())
    main = [h.text for h in browser.find_elements("css selector", "#synthetic-fast-lip thead th")]
    assert "IoU/hat" not in main and "pixel_acc" in main
    folded = browser.find_element("id", "synthetic-fast-lip-all")
    assert not folded.is_displayed()
    summary = browser.find_element("css selector", "details > summary")
    assert summary.text.startswith("2 more metrics")
    summary.click()
    assert folded.is_displayed()
    headers = [h.text for h in folded.find_elements("css selector", "thead th")]
    assert "IoU/hat" in headers and "IoU/hair" in headers
    cells = folded.find_elements("css selector", "tbody tr")[0].find_elements("css selector", "td")
    assert cells[headers.index("IoU/hat")].text.startswith("21.00")  # saip: 0.21 shown in percent


def test_every_score_cell_links_to_its_record_file(browser, tmp_path):
    records = from_files(three_methods(half_width=1.0), tmp_path / "run" / "records")
    write_boards(records, tmp_path / "boards")
    browser.get((tmp_path / "boards" / "leaderboard.html").as_uri())
    table = browser.find_element("id", "summary-synthetic-fast")
    headers = [h.text for h in table.find_elements("css selector", "thead th")]
    score_columns = [i for i, h in enumerate(headers) if h.endswith(("↑", "↓")) and h != "mean rank ↓"
                     and h != "norm. score ↑"]
    assert len(score_columns) == 3
    for row in table.find_elements("css selector", "tbody tr"):
        cells = row.find_elements("css selector", "td")
        method = cells[1].text
        for column in score_columns:
            link = cells[column].find_element("css selector", "a")
            path = Path(urllib.request.url2pathname(urllib.parse.urlparse(link.get_property("href")).path))
            record = json.loads(path.read_text())  # resolves to an existing record file...
            assert record["identity"]["method"] == method  # ...of this row's entry
            dataset = record["identity"]["dataset"]
            assert headers[column].startswith({"market1501": "Market", "crowdhuman": "CrowdHuman",
                                               "lip": "LIP"}[dataset])
    link = browser.find_element("css selector", "#synthetic-fast-market1501 tbody td a")
    link.click()  # the browser opens the record itself
    assert '"identity"' in browser.find_element("tag name", "body").text


def test_screenshot_of_the_board(browser, tmp_path):
    """Writes a PNG of the page when SAIP_BOARD_SCREENSHOT names a path (docs/board_screenshot.png is made
    this way); SAIP_BOARD_SCREENSHOT_RECORDS may name a run or records folder to draw instead of fakes."""
    from saip_bench.bench.store import load_records

    target = os.environ.get("SAIP_BOARD_SCREENSHOT")
    source = os.environ.get("SAIP_BOARD_SCREENSHOT_RECORDS")
    if source:
        records = load_records([source])
    else:
        records = from_files(three_methods(seeds=(0, 1), half_width=1.5), tmp_path / "run" / "records")
    write_boards(records, tmp_path / "boards", compare="paper")
    browser.set_window_size(1500, 1300)
    browser.get((tmp_path / "boards" / "leaderboard.html").as_uri())
    browser.execute_script("document.querySelectorAll('details').forEach(d => { d.open = true; });"
                           "window.scrollTo(0, 0);")  # drill-downs open, the page from its top
    png = browser.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    if target:
        Path(target).write_bytes(png)
