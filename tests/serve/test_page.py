"""The web page in a real browser: Debian's headless chromium, driven by Selenium through chromium-driver.

Skips where chromium or chromium-driver is missing (``.ci/run`` installs both). The screenshot goes to the test's
temporary folder (``BARKKIT_SCREENSHOT=path`` copies it somewhere to look at), never into the repository.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1700", "--no-proxy-server"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(script))


def test_page_generates_plays_and_detects(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    _wait(browser, "return document.querySelectorAll('#voice option').length > 2")  # presets listed
    _wait(browser, "return document.getElementById('health').textContent.startsWith('ready')")
    browser.find_element(By.ID, "text").send_keys("Hello from the page. It speaks.")
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.find_element(By.CSS_SELECTOR, "#options summary").click()
    browser.find_element(By.CSS_SELECTOR, "[data-option=max_gen_duration_s]").send_keys("0.6")
    browser.execute_script("document.getElementById('voice').value = 'test/alpha'")
    browser.find_element(By.ID, "generate").click()
    duration = _wait(browser, "const a = document.getElementById('player');"
                              "return a.src && a.readyState >= 1 && a.duration > 0 ? a.duration : false")
    assert 0.5 < duration < 5
    assert "seed 3" in browser.find_element(By.ID, "result-info").text
    assert not browser.find_element(By.ID, "generate-error").is_displayed()
    # the Detect panel: upload a clip, see p(Bark) and the spectrum
    clip = tmp_path / "clip.wav"
    rng = np.random.default_rng(1)
    soundfile.write(clip, (0.1 * rng.standard_normal(16_000 * 2)).astype(np.float32), 16_000)
    browser.find_element(By.ID, "detect-file").send_keys(str(clip))
    _wait(browser, "return !document.getElementById('detect-result').hidden")
    probability = browser.find_element(By.ID, "probability").text
    assert probability.startswith("p(Bark) = ") and probability.endswith("%")
    assert 0 <= float(probability.split("= ")[1].rstrip("%")) <= 100
    # an API error shows as a readable message on the page
    browser.execute_script("document.getElementById('voice').appendChild(new Option('gone', 'no/such-voice'));"
                           "document.getElementById('voice').value = 'no/such-voice'")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, "return !document.getElementById('generate-error').hidden")
    assert "unknown voice 'no/such-voice'" in browser.find_element(By.ID, "generate-error").text
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("BARKKIT_SCREENSHOT"):
        shutil.copy(shot, os.environ["BARKKIT_SCREENSHOT"])
