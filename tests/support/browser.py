"""Headless Debian Chromium driven by selenium, for the tests that look at the pages as a
shopper's browser draws them (tests/ui)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# Installed before any page script runs, in every document the browser opens: the violations
# the page's Content-Security-Policy reported (an inline style dropped, a script refused).
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolations.push(
    event.violatedDirective + " " + (event.blockedURI || "") + " " + (event.sample || "")
  );
}, true);
"""


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(
            f"headless browser test needs Debian's chromium and chromium-driver "
            f"(missing: {', '.join(missing)}); scripts/install_test_tools.sh installs them"
        )


@contextmanager
def chromium(profile: Path, width: int, height: int, *, watch_csp: bool = False) -> Iterator[Any]:
    """A selenium driver for a ``width`` x ``height`` window; ``watch_csp`` records the
    console log and every CSP violation (see :func:`csp_violations`)."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={profile}")
    if watch_csp:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        if watch_csp:
            driver.execute_cdp_cmd(
                "Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER}
            )
        yield driver
    finally:
        driver.quit()


def csp_violations(driver: Any) -> list[str]:
    """What the policy refused on the current page: its violation events, and the console
    messages saying so (the log is drained by reading it)."""
    events = driver.execute_script("return window.__cspViolations || []")
    # The console's first words say what was refused and where; the rest is boilerplate.
    console = [
        entry["message"][:160]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
        or "Refused to apply inline style" in entry["message"]
    ]
    return [*events, *console]
