// The Highlight page: ask the API, draw the tokens. Text only ever enters the page through
// textContent, never innerHTML, so a prompt like <script> shows as typed.
"use strict";

(function () {
  const form = document.getElementById("highlight-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const tokenMeta = document.querySelector('meta[name="api-token"]');
  const headers = { "Content-Type": "application/json" };
  if (tokenMeta) headers["Authorization"] = "Bearer " + tokenMeta.content;
  const ACT = "249, 115, 22";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function link(href, text, external) {
    const a = el("a", external ? "ext" : "latent-id", text);
    a.href = href;
    if (external) { a.target = "_blank"; a.rel = "noopener noreferrer"; }
    return a;
  }

  function mode() {
    return form.querySelector('input[name="mode"]:checked').value;
  }

  function syncMode() {
    $("feature-field").hidden = mode() !== "latent";
    $("feature").required = mode() === "latent";
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function detailOf(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return "request failed with HTTP " + status;
  }

  function fmt(x) {
    return Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.001) ? x.toExponential(3) : x.toFixed(4);
  }

  // Draws the prompt as it was typed: the gaps between tokens (spaces, line breaks) as plain
  // text, each token as a shaded span. `valueOf(token)` is the activation that shades it.
  function drawTokens(data, valueOf, describe) {
    const box = $("tokens");
    box.replaceChildren();
    const peak = data.max_activation > 0 ? data.max_activation : 1;
    let cursor = 0;
    data.tokens.forEach((token, i) => {
      if (!token.special && token.start >= 0 && token.start > cursor) {
        box.append(document.createTextNode(data.prompt.slice(cursor, token.start)));
      }
      let text = token.special ? token.token : token.text;
      if (token.start < 0 && !token.special) {  // no offsets: leave the leading space unshaded
        const bare = text.trimStart();
        if (bare.length < text.length) box.append(document.createTextNode(text.slice(0, text.length - bare.length)));
        text = bare;
      }
      const value = valueOf(token);
      const span = el("span", token.special ? "tok special" : "tok", text);
      const alpha = Math.max(0, Math.min(1, value / peak)) * 0.85;
      span.style.backgroundColor = "rgba(" + ACT + ", " + alpha.toFixed(3) + ")";
      span.title = fmt(value);
      span.dataset.index = String(i);
      span.addEventListener("mouseenter", () => { $("hover").textContent = describe(token); });
      box.append(span);
      if (token.special) box.append(document.createTextNode(" "));
      else if (token.start >= 0) cursor = token.end;
    });
    if (cursor > 0 && cursor < data.prompt.length) box.append(document.createTextNode(data.prompt.slice(cursor)));
    $("legend-max").textContent = fmt(data.max_activation) + " (prompt max)";
  }

  function tokenLabel(token) {
    const text = token.special ? token.token : JSON.stringify(token.text);
    return text + "  · token " + JSON.stringify(token.token) + " · position " + token.position;
  }

  function drawLatent(data) {
    $("result-title").replaceChildren(
      link("/latent/" + encodeURIComponent(data.sae).replace(/%2F/g, "/") + "/" + data.feature_idx, "Latent " + data.feature_idx),
    );
    if (data.neuronpedia_url) $("result-title").append(link(data.neuronpedia_url, "Neuronpedia ↗", true));
    $("result-stats").textContent = "SAE " + data.sae + " · max " + fmt(data.max_activation) + " · " + data.tokens.length + " tokens";
    const expl = data.explanation ? el("p", "expl", data.explanation) : el("p", "expl none", "No explanation available.");
    $("result-latent").replaceChildren(expl);
    if (!(data.max_activation > 0)) {
      $("result-latent").append(el("p", "silent", "Latent " + data.feature_idx + " does not fire on any token of this prompt: every activation is 0. Try another latent, or “top latents per token” to see which latents do."));
    }
    drawTokens(data, (t) => t.activation, (t) => tokenLabel(t) + " · activation " + fmt(t.activation));
    $("top-panel").hidden = true;
  }

  function drawTop(data) {
    $("result-title").textContent = "Top latents per token";
    $("result-stats").textContent = "SAE " + data.sae + " · top " + data.k + " · " + data.tokens.length + " tokens";
    $("result-latent").replaceChildren(el("p", "muted", "Shading: each token's most active latent. Click a token to list its latents; click a latent to highlight it."));
    const describe = (t) => tokenLabel(t) + " · " + (t.top.length ? t.top.map((v) => v.latent + ": " + fmt(v.activation)).join(", ") : "no active latent");
    drawTokens(data, (t) => (t.top.length ? t.top[0].activation : 0), describe);
    const panel = $("top-panel");
    panel.hidden = false;
    panel.replaceChildren(el("p", "muted", "Click a token above."));
    $("tokens").querySelectorAll(".tok").forEach((span) => {
      span.style.cursor = "pointer";
      span.addEventListener("click", () => {
        const token = data.tokens[Number(span.dataset.index)];
        $("tokens").querySelectorAll(".tok.sel").forEach((s) => s.classList.remove("sel"));
        span.classList.add("sel");
        const chips = el("div", "chips");
        token.top.forEach((v) => {
          const chip = el("button", "chip", "latent " + v.latent);
          chip.type = "button";
          chip.append(el("small", null, fmt(v.activation)));
          chip.addEventListener("click", () => {
            form.querySelector('input[name="mode"][value="latent"]').checked = true;
            $("feature").value = String(v.latent);
            syncMode();
            run();
          });
          chips.append(chip);
        });
        panel.replaceChildren(el("p", null, tokenLabel(token)), token.top.length ? chips : el("p", "muted", "No latent is active here."));
      });
    });
  }

  async function run() {
    $("error").hidden = true;
    const prompt = $("prompt").value;
    const sae = $("sae").value;
    const latentMode = mode() === "latent";
    const feature = $("feature").value;
    if (!prompt.trim()) { showError("Type a prompt first."); return; }
    if (latentMode && feature === "") { showError("Give a latent index (or pick 'top latents per token')."); return; }
    const body = latentMode ? { prompt, sae, feature_idx: Number(feature) } : { prompt, sae, k: 5 };
    const params = new URLSearchParams({ prompt, sae, mode: mode() });
    if (latentMode) params.set("feature", feature);
    history.replaceState(null, "", "/?" + params.toString());
    $("go").disabled = true;
    try {
      const reply = await fetch(latentMode ? "/api/highlight" : "/api/top-latents", {
        method: "POST", headers, body: JSON.stringify(body),
      });
      const data = await reply.json().catch(() => null);
      if (!reply.ok) { showError(detailOf(data, reply.status)); return; }
      $("result").hidden = false;
      $("hover").textContent = "Hover a token for its exact value.";
      if (latentMode) drawLatent(data); else drawTop(data);
    } catch (err) {
      showError("Could not reach the server: " + err);
    } finally {
      $("go").disabled = false;
    }
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
  form.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", syncMode));
  syncMode();
  if ($("prompt").value.trim() && (mode() === "top" || $("feature").value !== "")) run();
})();
