"""HTML pages, escaping, the token rules and the response headers."""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi.testclient import TestClient

from pivotal_sae.explorer.app import create_app
from pivotal_sae.explorer.browse import Browser

from .conftest import TOKEN, XSS

ABLATOR = "blocks.0.hook_resid_post"


def _no_markup_from_outside(html: str) -> None:
    assert XSS not in html
    # The only script element is the page's own file; no inline script, no event handlers.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer>']
    assert not re.search(r"<[^>]+\son\w+=", html)


def test_pages_render_and_escape(client):
    home = client.get("/", params={"prompt": XSS, "feature": 3, "sae": ABLATOR})
    assert home.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in home.text
    _no_markup_from_outside(home.text)

    pairs = client.get("/pairs")
    assert pairs.status_code == 200 and pairs.text.count('class="card pair"') == 20
    _no_markup_from_outside(pairs.text)
    assert client.get("/pairs", params={"page": 2}).status_code == 200
    assert client.get("/pairs", params={"page": 999}).status_code == 404
    assert client.get("/pairs", params={"kind": "decoder"}).status_code == 200

    latent = client.get(f"/latent/{ABLATOR}/0")
    assert latent.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; and ampersands &amp;amp;" in latent.text
    assert "https://www.neuronpedia.org/tiny-bert/0-test-res/0" in latent.text
    _no_markup_from_outside(latent.text)
    missing = client.get(f"/latent/{ABLATOR}/500")
    assert missing.status_code == 404 and "out of range" in missing.text
    assert client.get("/latent/nope/1").status_code == 404
    jump = client.get("/latent", params={"sae": ABLATOR, "index": 4}, follow_redirects=False)
    assert jump.status_code == 303 and jump.headers["location"] == f"/latent/{ABLATOR}/4"
    # Click-through links carry the example's text to the Highlight page, URL-encoded.
    assert 'href="/?prompt=' in latent.text and f"&amp;sae={quote(ABLATOR)}" in latent.text


def test_pages_without_a_run(browser):
    bare = TestClient(create_app(Browser(browser.explorer)))
    assert "No run is open" in bare.get("/pairs").text
    assert bare.get("/api/pairs").status_code == 404
    assert bare.get(f"/api/latents/{ABLATOR}/0").json()["firing_count"] is None


def test_the_stylesheet_is_the_one_the_report_inlines(client):
    from pivotal_sae.render import stylesheet

    response = client.get("/static/style.css")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert response.text == stylesheet()


def test_security_headers(client):
    for path in ("/", "/api/saes", "/static/app.js", "/static/style.css"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_token_guards_every_api_call(token_client):
    body = {"prompt": "hello", "feature_idx": 1}
    calls = [
        ("post", "/api/highlight", {"json": body}),
        ("post", "/api/top-latents", {"json": {"prompt": "hi"}}),
        ("get", "/api/saes", {}),
        ("get", "/api/info", {}),
        ("get", "/api/pairs", {}),
        ("get", f"/api/latents/{ABLATOR}/0", {}),
        ("get", "/api/nonexistent", {}),
    ]
    for method, path, kwargs in calls:
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": TOKEN}):
            reply = getattr(token_client, method)(path, headers=headers, **kwargs)
            assert reply.status_code == 401, (path, headers)
            assert reply.headers["www-authenticate"].startswith("Bearer")
            assert "bearer token" in reply.json()["detail"]
        # The page cookie is not enough for the API.
        reply = getattr(token_client, method)(path, cookies={"pivotal_sae_token": "x"}, **kwargs)
        assert reply.status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert token_client.post("/api/highlight", json=body, headers=good).status_code == 200
    assert token_client.get("/healthz").status_code == 200


def test_token_pages_take_a_cookie(token_client):
    assert token_client.get("/").status_code == 401
    assert token_client.get("/pairs").status_code == 401
    assert token_client.get("/?token=wrong").status_code == 401
    login = token_client.get("/pairs", params={"token": TOKEN, "kind": "decoder"})
    assert login.status_code == 303
    assert login.headers["location"] == "/pairs?kind=decoder"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    page = token_client.get("/", cookies={"pivotal_sae_token": value})
    assert page.status_code == 200
    assert f'<meta name="api-token" content="{TOKEN}">' in page.text
    bearer = token_client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200


def test_foreign_host_names_are_refused_on_loopback(browser):
    local = TestClient(create_app(browser, allowed_hosts=["127.0.0.1", "localhost"]))
    assert local.get("/healthz", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert local.get("/api/saes", headers={"host": "attacker.example"}).status_code == 400
