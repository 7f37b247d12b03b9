"""Screenshots of the explorer's pages and the run's report for the docs (docs/img/*.png).

Serves the explorer as `pivotal-sae serve --run RUN` would (default: the embedded MiniLM and
its default SAEs), drives headless Chromium (Debian's /usr/bin/chromium) through Playwright,
and saves the Highlight page (one latent, and top latents per token), the Pairs page and the
Latent page of the first pair's first latent, the dashboard of a latent that fires often, and
the run's report.html (its top, the first candidate's card and the first original pair's card,
with both latents' dashboards).

    uv run python benchmarks/explorer_screenshots.py --run runs/20261123-absorb
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import uvicorn

from pivotal_sae.explorer.app import build_browser, create_app
from pivotal_sae.explorer.config import ServeConfig

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
PROMPT = (
    "In 1941 the President asked Congress to declare war. Today we ask the nation to rebuild "
    "its roads, bridges and schools, and to keep the promise of Social Security for every "
    "American family."
)


def selective_latent(explorer, sae: str, prompt: str) -> int:
    """A latent that fires on a few of the prompt's tokens, strongly: good to look at."""
    loaded = explorer.sae(sae)
    tokens = explorer.tokenize(prompt)
    acts_SE = explorer.latent_acts(loaded, tokens)[1:]
    active_E = (acts_SE > 0).sum(0)
    peak_E = acts_SE.max(0).values
    wanted = (active_E >= 2) & (active_E <= max(3, acts_SE.shape[0] // 5))
    return int(torch.where(wanted, peak_E, -1.0).argmax())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--feature", type=int, default=None)
    p.add_argument("--dashboard-latent", type=int, default=None)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    browser = build_browser(ServeConfig(run=args.run, device="cpu"))
    explorer = browser.explorer
    sae = browser.run_sae or next(iter(explorer.saes))
    feature = (
        args.feature if args.feature is not None else selective_latent(explorer, sae, args.prompt)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(browser, allowed_hosts=["127.0.0.1"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = chromium.new_page(viewport={"width": 1200, "height": 860})
        query = urlencode({"prompt": args.prompt, "sae": sae, "feature": feature})
        page.goto(f"{base}/?{query}")
        page.wait_for_selector("#tokens .tok")
        spans = page.locator("#tokens .tok")
        peak = max(range(spans.count()), key=lambda i: float(spans.nth(i).get_attribute("title")))
        spans.nth(peak).hover()
        shots.append(args.out / "explorer-highlight.png")
        page.screenshot(path=str(shots[-1]), full_page=True)

        page.click('label:has(input[value="top"])')
        page.click("#go")
        page.wait_for_selector("#top-panel:not([hidden])")
        page.locator("#tokens .tok").nth(peak).click()
        shots.append(args.out / "explorer-top-latents.png")
        page.screenshot(path=str(shots[-1]), full_page=True)

        if browser.run is not None:
            page.set_viewport_size({"width": 1200, "height": 1500})
            page.goto(f"{base}/pairs")
            shots.append(args.out / "explorer-pairs.png")
            page.screenshot(path=str(shots[-1]))
            first = browser.pairs("effect", 0, 1).pairs
            latent = first[0].a.id if first else feature
            # The page's top: the latent's counts, then its dashboard (the page runs on with
            # its top examples and pairs; a full-page shot would be over 400 KB).
            page.set_viewport_size({"width": 1200, "height": 1500})
            page.goto(f"{base}/latent/{sae}/{latent}")
            shots.append(args.out / "explorer-latent.png")
            page.screenshot(path=str(shots[-1]))
            # The dashboard of a latent that fires often enough to fill every panel.
            busy = args.dashboard_latent
            if busy is None:
                sample = browser.sample(explorer.sae(sae))
                counts = sample.offsets_E1[1:] - sample.offsets_E1[:-1]
                busy = int((counts - 400).abs().argmin())  # common, not the most common
            page.set_viewport_size({"width": 1200, "height": 1400})
            page.goto(f"{base}/latent/{sae}/{busy}")
            page.locator("#dashboard").scroll_into_view_if_needed()
            shots.append(args.out / "explorer-dashboard.png")
            page.locator("#dashboard").screenshot(path=str(shots[-1]))
            report = browser.run.path / "report.html"
            if report.is_file():
                page.set_viewport_size({"width": 1400, "height": 1000})
                page.goto(report.resolve().as_uri())
                shots.append(args.out / "report.png")
                page.screenshot(path=str(shots[-1]))
                # The sticky header would cover the top of an element's screenshot.
                page.add_style_tag(content="header.top { position: static; }")
                shots.append(args.out / "report-dashboard.png")
                page.locator("#pair-1").screenshot(path=str(shots[-1]))
                if page.locator("#candidate-1").count():  # the partial method's first card
                    shots.append(args.out / "report-candidate.png")
                    page.locator("#candidate-1").screenshot(path=str(shots[-1]))
        chromium.close()
    server.should_exit = True
    thread.join(timeout=10)
    for shot in shots:
        print(f"wrote {shot} ({shot.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
