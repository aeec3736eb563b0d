"""Headless Chromium for looking at reports: Debian's /usr/bin/chromium driven by
Playwright (no browser is ever downloaded), with everything that could reach a network off."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def report_page(browser: Any, width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, dict[str, list[str]]]]:
    """A page that records console errors, page errors, dialogs (an alert() would be one) and
    any request that leaves the file system."""
    seen: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "requests": []}
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["pageerror"].append(str(e)))

    def on_dialog(d: Any) -> None:
        seen["dialog"].append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda r: seen["requests"].append(r.url) if not r.url.startswith(("file:", "data:", "blob:"))
            else None)
    try:
        yield page, seen
    finally:
        context.close()
