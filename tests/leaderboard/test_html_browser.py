"""The HTML board in a real headless browser (Debian chromium + chromedriver via selenium)."""

import os
import shutil

import pytest

from saip_bench.leaderboard.render import write_boards
from tests.leaderboard.fakes import rec, three_methods

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
