"""Each built-in's report.html read by a real browser (headless Chromium, DevTools protocol).

At a 1280 px wide viewport the page must not scroll sideways
(``document.documentElement.scrollWidth <= clientWidth``), every image must have loaded
(``complete`` and ``naturalWidth > 0``) and the browser must report no error (console
error, uncaught exception, failed load).  A full-page screenshot of each report is saved
to ``$EPCSIM_SCREENSHOTS`` or, by default, ``tests/report/screenshots/`` (ignored by git;
docs/OUTPUTS.md).

Without a browser the test is skipped, unless ``EPCSIM_REQUIRE_BROWSER=1`` (set by
``.ci/run``, which installs Debian's ``chromium``): then it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser import Browser, find_browser

from epcsim.report import write_report
from epcsim.sim import simulate

WIDTH = 1280
SCREENSHOTS = Path(os.environ.get("EPCSIM_SCREENSHOTS") or Path(__file__).parent / "screenshots")

#: the built-ins, each as users run it; kselftest at its default 96 MiB takes more than
#: 15 s on a 2-core machine, so the quick run takes it at 16 MiB (same cgroup tree, same
#: tables) and the slow one at its default
BUILTINS = [
    pytest.param("kselftest", ("host.epc=16MiB",), id="kselftest-16MiB"),
    pytest.param("kselftest", (), id="kselftest", marks=pytest.mark.slow),
    pytest.param("noisy-neighbour", (), id="noisy-neighbour"),
    pytest.param("overcommit", (), id="overcommit"),
    pytest.param("nested-fairness", (), id="nested-fairness"),
]

#: what the page measures: its widths, its images, and the elements wider than the
#: viewport (to name the culprit when the page overflows)
PROBE = """(() => {
  const d = document.documentElement;
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right > d.clientWidth + 0.5) {
      wide.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '')
                + ' right=' + Math.round(r.right));
    }
  }
  return {
    scrollWidth: d.scrollWidth,
    clientWidth: d.clientWidth,
    images: Array.from(document.images).map(i => ({
      src: i.getAttribute('src'), complete: i.complete, naturalWidth: i.naturalWidth,
      width: i.getBoundingClientRect().width })),
    wide: wide.slice(0, 10),
  };
})()"""


def _require_browser() -> str:
    exe = find_browser()
    if exe is None:
        msg = "no Chromium (chromium, chromium-browser, google-chrome or $EPCSIM_BROWSER)"
        if os.environ.get("EPCSIM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"EPCSIM_REQUIRE_BROWSER=1 but {msg}")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser(_require_browser())
    try:
        yield b
    finally:
        b.close()


def render(browser: Browser, run_dir: Path, shot: Path | None) -> tuple[dict, list[str]]:
    """Open run_dir/report.html at WIDTH px; return the probe's result and the errors."""
    with browser.page() as page:
        page.open((run_dir / "report.html").resolve().as_uri(), WIDTH)
        probe = page.evaluate(PROBE)
        if shot is not None:
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(shot)
        return probe, list(page.errors)


@pytest.mark.parametrize(("name", "overrides"), BUILTINS)
def test_builtin_report_in_browser(
    browser: Browser, tmp_path: Path, name: str, overrides: tuple[str, ...]
) -> None:
    d = tmp_path / name
    simulate(f"builtin:{name}", overrides=list(overrides)).write(d)
    write_report(d)
    shot = SCREENSHOTS / (name + ("-" + "-".join(overrides) if overrides else "") + ".png")
    probe, errors = render(browser, d, shot)
    assert errors == []
    assert probe["clientWidth"] == WIDTH
    assert probe["scrollWidth"] <= probe["clientWidth"], probe["wide"]
    assert probe["wide"] == []
    assert probe["images"], "the report shows no figure"
    for img in probe["images"]:
        assert img["complete"] and img["naturalWidth"] > 0, img
        assert 0 < img["width"] <= WIDTH, img
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_sees_a_missing_image_and_an_overflow(browser: Browser, tmp_path: Path) -> None:
    """The checks above can fail: a page with a broken image and a too-wide table."""
    page = tmp_path / "report.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png" alt="x">'
        '<table><tr><td style="white-space:nowrap">' + "x" * 400 + "</td></tr></table>"
        "</body></html>",
        encoding="utf-8",
    )
    probe, errors = render(browser, tmp_path, None)
    assert probe["scrollWidth"] > probe["clientWidth"] == WIDTH
    assert [i["src"] for i in probe["images"] if not i["naturalWidth"]] == ["missing.png"]
    assert len(errors) == 1 and "missing.png" in errors[0], errors
