"""HTML shared by `report.html` and the explorer: one set of Jinja templates, one stylesheet.

- `templates/_macros.html`  tokens shaded by activation, a latent's title, its explanation
- `templates/_pair.html`    the pair card (both latents side by side, with examples)
- `templates/report.html`   the self-contained report page (the stylesheet inlined)
- `static/style.css`        the one stylesheet: the explorer serves it as /static/style.css,
                            the report inlines it

Autoescaping is on for every template, so prompts, tokens and explanations always reach the
browser as text. Activations are shaded with the CSS classes a0..a20 rather than inline styles,
which the explorer's Content-Security-Policy does not allow.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"
STYLESHEET = Path(__file__).parent / "static" / "style.css"


def shade_class(value: float, peak: float) -> str:
    """One of 21 CSS classes a0..a20: the activation as a share of the peak, in 5% steps."""
    if peak <= 0 or value <= 0:
        return "a0"
    return f"a{max(1, min(20, round(20 * value / peak)))}"


def make_environment(*template_dirs: Path) -> Any:
    """A Jinja environment over `template_dirs` and then the shared templates, with the shared
    globals (`shade`) and filters (`count`: 12,345 or –; `num`: 3 significant digits or –)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*template_dirs, TEMPLATES]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from pivotal_sae.render.grades import GRADE_NOTES

    env.globals.update(shade=shade_class, grade_notes=GRADE_NOTES)
    env.filters["count"] = lambda n: "–" if n is None else f"{n:,}"
    env.filters["num"] = lambda x, digits=3: "–" if x is None else f"{x:.{digits}g}"
    # "1 context", "3 contexts": `{{ n|plural("context") }}`
    env.filters["http_url"] = http_url
    env.filters["plural"] = lambda n, word: f"{n:,} {word}{'' if n == 1 else 's'}"
    return env


@functools.cache
def stylesheet() -> str:
    return STYLESHEET.read_text(encoding="utf-8")


def http_url(url: object) -> str:
    """`url` if it is an http(s) link, else "" (a `javascript:` or `data:` link from a server's
    answer or a run's pairs.json must never become a link)."""
    if not isinstance(url, str):
        return ""
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https") or any(ord(c) < 32 for c in url):
        return ""
    return url
