"""End to end in headless Chromium: type a prompt, see highlighted tokens, XSS stays text.

Needs Debian's `chromium` (at /usr/bin/chromium) and the Playwright Python package; it skips,
saying why, only when they are missing. Screenshots go to the test's temporary folder, or to
$PIVOTAL_SAE_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from .conftest import XSS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.exists():
        pytest.skip(
            f"Chromium is not installed at {CHROMIUM} (apt-get install chromium chromium-driver)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.console_errors = []
        page.on(
            "console",
            lambda m: page.console_errors.append(m.text) if m.type == "error" else None,
        )
        yield page
        browser.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    if os.environ.get("PIVOTAL_SAE_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["PIVOTAL_SAE_SCREENSHOTS"]) / name)
    return path


def test_highlight_page_in_chromium(page, live_server, browser, tmp_path):
    prompt = f"The President spoke to Congress. {XSS} Then the nation listened."
    expected = browser.explorer.highlight(prompt, 5)
    page.goto(live_server + "/")
    page.fill("#prompt", prompt)
    page.fill("#feature", "5")
    page.click("#go")
    page.wait_for_selector("#tokens .tok")
    spans = page.locator("#tokens .tok")
    assert spans.count() == len(expected.tokens)
    # The prompt reads back exactly as typed, the script tag included, as text.
    shown = page.locator("#tokens").inner_text()
    assert XSS in shown and "Then the nation listened." in shown
    assert page.locator("#tokens script").count() == 0
    assert page.dialogs == []
    # Shading follows the activations: the strongest token is the most opaque.
    peak = max(range(len(expected.tokens)), key=lambda i: expected.tokens[i].activation)
    assert expected.tokens[peak].activation > 0
    background = spans.nth(peak).evaluate("e => getComputedStyle(e).backgroundColor")
    assert background.startswith("rgba(249, 115, 22, 0.85")
    spans.nth(peak).hover()
    assert "activation" in page.locator("#hover").inner_text()
    assert spans.nth(peak).get_attribute("title") != ""
    assert "Latent 5" in page.locator("#result-title").inner_text()
    assert "neuronpedia.org/tiny-bert/0-test-res/5" in page.locator(
        "#result-title a.ext"
    ).get_attribute("href")
    assert "prompt=" in page.url  # shareable address
    _shot(page, tmp_path, "explorer-highlight-test.png")

    # Top latents per token, then a click through to one of them.
    page.click('label:has(input[value="top"])')
    page.click("#go")
    page.wait_for_selector("#top-panel:not([hidden])")
    page.locator("#tokens .tok").nth(3).click()
    page.locator("#top-panel .chip").first.click()
    page.wait_for_selector("#result-title a.latent-id")  # (the CSP forbids wait_for_function)
    assert page.locator("#tokens .tok").count() == len(expected.tokens)

    # A bad latent shows the server's message, not a broken page.
    page.fill("#feature", "100000")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert "out of range" in page.locator("#error").inner_text()
    assert page.console_errors == [] or all("422" in e for e in page.console_errors)


def test_pairs_and_latent_pages_in_chromium(page, live_server, tmp_path):
    page.goto(live_server + "/pairs")
    assert page.locator("article.pair").count() > 0
    assert page.dialogs == []
    _shot(page, tmp_path, "explorer-pairs-test.png")
    page.goto(live_server + "/latent/blocks.0.hook_resid_post/0")
    # Latent 0's explanation carries a script tag: shown as text, never run.
    assert XSS in page.locator("p.expl").first.inner_text()
    assert page.dialogs == []
    _shot(page, tmp_path, "explorer-latent-test.png")
    # Click-through from an example to the Highlight page, which runs by itself.
    page.locator(".example .ex-actions a").first.click()
    page.wait_for_selector("#tokens .tok")
    assert "Latent 0" in page.locator("#result-title").inner_text()


def test_the_dashboard_in_chromium(page, live_server, browser, tmp_path):
    sae = "blocks.0.hook_resid_post"
    sample = browser.sample(browser.explorer.saes[sae])
    busy = int((sample.offsets_E1[1:] - sample.offsets_E1[:-1]).argmax())
    errors, dialogs = len(page.console_errors), len(page.dialogs)  # earlier tests' stay theirs
    page.goto(f"{live_server}/latent/{sae}/{busy}")
    bars = page.locator("#dashboard svg.hbars rect")
    assert bars.count() == 24 and page.locator("#dashboard svg.hbars").is_visible()
    assert page.locator("#dashboard .panel").count() == 5
    assert page.locator("#dashboard .bands .example").count() >= 4
    assert _page_width(page) <= 1200
    assert page.console_errors[errors:] == [] and page.dialogs[dialogs:] == []
    _shot(page, tmp_path, "explorer-dashboard-test.png")


def _page_width(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth")


WORDS = [
    " the", " representation", " of", " international", " organisations", " absorbed",
    " latent", " features", " throughout", " Washington", " legislation", " and", ",",
]  # fmt: skip


def _wide_report(folder: Path) -> Path:
    """A report whose examples have the default window (10 tokens before, 5 after) of long
    words, as a real `absorb` run's have."""
    from pivotal_sae.absorption.cooccurrence import DenseCooccurrence
    from pivotal_sae.absorption.dashboard import ActivationSample
    from pivotal_sae.absorption.examples import TopExamples
    from pivotal_sae.absorption.explanations import Explanations
    from pivotal_sae.absorption.pairs import find_effect_pairs
    from pivotal_sae.absorption.report import write_report

    generator = torch.Generator().manual_seed(0)
    acts_BSE = torch.rand(8, 32, 12, generator=generator) * (
        torch.rand(8, 32, 12, generator=generator) < 0.1
    )
    counter = DenseCooccurrence(12)
    counter.update(acts_BSE.reshape(-1, 12), contexts=8)
    examples = TopExamples(12, 3, window_before=10, window_after=5)
    token_ids_BS = torch.randint(0, len(WORDS), (8, 32), generator=generator)
    examples.update(acts_BSE, token_ids_BS, torch.ones(8, 32, dtype=torch.bool), torch.arange(8))
    search = find_effect_pairs(
        torch.randn(12, 6, generator=generator), torch.ones(12, dtype=torch.int64), counter,
        cooccurrence_threshold=100, cosine_sim_threshold=-1,
    )  # fmt: skip
    explained = Explanations({i: [f"mentions of institutions, case {i}"] for i in range(12)}, "t")
    sample = ActivationSample.from_batches(
        [(acts_BSE, token_ids_BS, torch.ones(8, 32, dtype=torch.bool))], 12
    )
    paths = write_report(
        folder, search, examples=examples, explanations=explained, neuronpedia_id="m/s",
        token_text=lambda ids: [WORDS[i] for i in ids], summary={"model": "tiny"}, html_pairs=5,
        counter=counter, effects=(torch.randn(12, 6, generator=generator),
                                  torch.ones(12, dtype=torch.int64)), sample=sample,
    )  # fmt: skip
    return paths["report.html"]


@pytest.mark.parametrize("width", [1400, 1920])
def test_pair_cards_fit_the_window(page, live_server, tmp_path, width):
    """report.html and the Pairs page lay pair cards out alike, and neither is wider than the
    window (issue 18: the report's right-hand latent column overflowed, a 1,981 px page in a
    1,400 px window, while the explorer's fitted)."""
    report = _wide_report(tmp_path / "run")
    page.set_viewport_size({"width": width, "height": 1000})
    try:
        page.goto(report.as_uri())
        assert page.locator("article.pair").count() == 5
        # The first pairs' dashboards are open, with their histograms drawn.
        assert page.locator("#pair-1 details.dash-wrap[open] svg.hbars").count() == 2
        report_width = _page_width(page)
        page.locator("#pair-1").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / f"report-cards-{width}.png"))
        if os.environ.get("PIVOTAL_SAE_SCREENSHOTS"):
            shutil.copy(
                tmp_path / f"report-cards-{width}.png", os.environ["PIVOTAL_SAE_SCREENSHOTS"]
            )
        page.goto(live_server + "/pairs")
        assert page.locator("article.pair").count() > 0
        explorer_width = _page_width(page)
    finally:
        page.set_viewport_size({"width": 1200, "height": 900})
    assert report_width <= width and explorer_width <= width, (report_width, explorer_width)
