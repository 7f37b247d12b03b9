"""`pivotal-sae serve` and `pivotal-sae highlight` from the command line."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from pivotal_sae.cli import main

from .conftest import XSS, free_port


def _fails(argv, needle, capsys):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err
    return err


def test_serve_bad_inputs(tmp_path, world, capsys, monkeypatch):
    monkeypatch.delenv("PIVOTAL_SAE_TOKEN", raising=False)
    port = str(free_port())
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cooccurrences.safetensors").write_bytes(b"\x00" * 40)
    bad_pairs = tmp_path / "bad-pairs"
    bad_pairs.mkdir()
    (bad_pairs / "pairs.json").write_text("{not json")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = [
            (["--port", "70000"], "--port must be between 1 and 65535"),
            (["--port", "0"], "--port must be between 1 and 65535"),
            (["--port", "http"], "Invalid value for '--port'"),
            (["--host", "0.0.0.0"], "0.0.0.0 is reachable from other machines; give --token"),
            (["--host", "192.168.1.7", "--token", "short"], "--token must be at least 8"),
            (["--run", str(tmp_path / "nowhere")], "no such directory"),
            (["--run", str(empty)], "is not an absorb run directory"),
            (["--run", str(corrupt), "--port", port], "is truncated or corrupted"),
            (["--run", str(bad_pairs), "--port", port], "pairs.json is not valid JSON"),
            (["--sae-path", str(tmp_path / "no-sae"), "--port", port], "no such directory"),
            (["--sae-release", "gemma-scope-2b-pt-rez", "--sae-id", "x", "--port", port],
             "gemma-scope-2b-pt-rez"),
            (["--port", str(busy.getsockname()[1])], "is in use; pick another --port"),
            (["--max-request-bytes", "10"], "--max-request-bytes must be at least 1024"),
            (["--run", str(world["run"]), "--explanations", str(tmp_path / "none.jsonl"),
              "--port", port], "--explanations"),
        ]  # fmt: skip
        for argv, needle in cases:
            _fails(["serve", *argv], needle, capsys)


def _highlight_args(world, out, *extra):
    return ["highlight", "--prompt", f"Liberty {XSS} & union.", "--feature-idx", "2",
            "--out", str(out), *extra]  # fmt: skip


def test_highlight_in_process_and_via_server(tmp_path, world, live_server, capsys):
    local = tmp_path / "local.html"
    model = ["--model", str(world["model_dir"]), "--sae-path", str(world["ablator_dir"])]
    assert main(_highlight_args(world, local, *model, "--device", "cpu")) == 0
    page = local.read_text()
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3", "")
    assert "the word &#39;the&#39;" not in page  # latent 2's explanation needs --explanations
    with_texts = tmp_path / "explained.html"
    argv = _highlight_args(world, with_texts, *model, "--explanations", str(world["explanations"]))
    assert main(argv) == 0
    assert "the word &#39;the&#39;" in with_texts.read_text()
    assert "neuronpedia.org/tiny-bert/0-test-res/2" in page

    remote = tmp_path / "remote.html"
    assert main(_highlight_args(world, remote, "--server", live_server)) == 0
    # Same page either way (the server knows latent 2's explanation from pairs.json).
    assert remote.read_text() == with_texts.read_text()
    capsys.readouterr()

    cases = [
        (["--server", live_server, "--sae", "nope"], "server answered 422: unknown SAE 'nope'"),
        (["--server", live_server, "--feature-idx", "96"], "feature_idx 96 is out of range"),
        (["--server", live_server, "--model", "x"], "--server uses the server's model"),
        (["--server", "ftp://host"], "--server must be an http(s) URL"),
        (["--server", f"http://127.0.0.1:{free_port()}"], "cannot reach the explorer"),
        ([*model, "--sae", "nope"], "unknown SAE 'nope'"),
    ]
    for extra, needle in cases:
        _fails(_highlight_args(world, tmp_path / "x.html", *extra), needle, capsys)
    _fails(_highlight_args(world, tmp_path / "no" / "x.html"), "does not exist", capsys)
    assert not (tmp_path / "x.html").exists()


def _outward_address() -> str:
    """An address of this machine other than loopback, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address if not address.startswith("127.") else "127.0.0.1"


def test_serve_off_loopback_needs_the_token(tmp_path, world, capsys):
    """`serve --host 0.0.0.0 --token T` as the command runs it (in this process, to share the
    imports), reached through an address other than loopback when the machine has one."""
    from pivotal_sae.explorer.app import prepare_server
    from pivotal_sae.explorer.config import ServeConfig

    port = free_port()
    token = "off-loopback-secret"
    config = ServeConfig(
        host="0.0.0.0", port=port, token=token, model=str(world["model_dir"]),
        sae_path=world["ablator_dir"], device="cpu",
    )  # fmt: skip
    server = prepare_server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{_outward_address()}:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.02)
        body = {"prompt": "hello there", "feature_idx": 4}
        assert httpx.post(base + "/api/highlight", json=body).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.post(base + "/api/highlight", json=body, headers=wrong).status_code == 401
        assert httpx.get(base + "/api/saes").status_code == 401
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(base + "/healthz").status_code == 200
        right = {"Authorization": f"Bearer {token}"}
        reply = httpx.post(base + "/api/highlight", json=body, headers=right)
        assert reply.status_code == 200 and reply.json()["feature_idx"] == 4

        out = tmp_path / "off.html"
        capsys.readouterr()
        _fails(_highlight_args(world, out, "--server", base), "401", capsys)
        assert main(_highlight_args(world, out, "--server", base, "--token", token)) == 0
        assert out.is_file()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_highlight_says_when_the_latent_does_not_fire(tmp_path, world, live_server, capsys):
    import httpx

    prompt = "Liberty and union."
    top = httpx.post(live_server + "/api/top-latents", json={"prompt": prompt, "k": 32}).json()
    firing = {v["latent"] for token in top["tokens"] for v in token["top"]}
    silent = min(set(range(96)) - firing)
    out = tmp_path / "silent.html"
    argv = ["highlight", "--prompt", prompt, "--feature-idx", str(silent), "--out", str(out),
            "--server", live_server]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"latent {silent} of " in err and "does not fire on this prompt" in err
    assert "latents that do: " in err
    assert "does not fire on any token of this prompt" in out.read_text()


def test_highlight_without_out_names_its_file(tmp_path, world, live_server, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["highlight", "--prompt", "Liberty and union.", "--feature-idx", "2",
            "--server", live_server]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "highlight-latent-2.html").is_file()
    assert "wrote highlight-latent-2.html" in capsys.readouterr().err
