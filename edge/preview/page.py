"""The live view's one page: the stream, the state and the last events, with no outside resources
(the Pi may have no internet, and the page must not call anywhere).

The style and the script are kept apart so that ``CSP`` can allow exactly these two by their hashes:
a script or style injected into the page any other way does not run.
"""

import base64
import hashlib

STYLE = """
  body { font: 15px system-ui, sans-serif; margin: 1em; background: #111; color: #eee; }
  main { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
  img { max-width: 100%; background: #222; min-width: 320px; min-height: 240px; }
  table { border-collapse: collapse; }
  td, th { padding: 0.15em 0.6em; text-align: left; }
  #events td { font-family: ui-monospace, monospace; font-size: 13px; }
  .paused { color: #f80; font-weight: bold; }
"""

SCRIPT = """
function cell(row, text) { row.insertCell().textContent = text; }
function pct(x) { return x === undefined || x === null ? "" : Math.round(x * 100) + " %"; }
async function refresh() {
  try {
    const status = await (await fetch("/status.json", {cache: "no-store"})).json();
    document.getElementById("title").textContent = "emotion-edge: " + status.device;
    const s = status.state, state = document.getElementById("state");
    state.replaceChildren();
    if (s.ts) {
      for (const [name, value] of [["faces", s.faces], ["emotion", s.emotion],
                                   ["confidence", s.faces ? pct(s.confidence) : "unknown"],
                                   ["paused", s.paused ? "yes: the camera is off" : "no"], ["at", s.ts]]) {
        const row = state.insertRow(); cell(row, name); cell(row, value);
        if (name === "paused" && s.paused) row.className = "paused";
      }
    }
    const events = document.getElementById("events");
    events.replaceChildren();
    for (const e of status.events) {
      const row = events.insertRow();
      cell(row, e.ts.slice(11, 19)); cell(row, e.type); cell(row, "#" + e.track);
      cell(row, (e.previous ? e.previous + " -> " : "") + e.emotion); cell(row, pct(e.confidence));
    }
  } catch (err) { /* the service is restarting: try again */ }
}
refresh();
setInterval(refresh, 1000);
"""

PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emotion-edge live view</title>
<style>"""
    + STYLE
    + """</style>
</head>
<body>
<h1 id="title">emotion-edge</h1>
<main>
  <img id="stream" src="/stream.mjpg" alt="annotated camera frames">
  <section>
    <h2>Now</h2>
    <table id="state"><tr><td>waiting for the service...</td></tr></table>
    <h2>Last events</h2>
    <table id="events"></table>
  </section>
</main>
<script>"""
    + SCRIPT
    + """</script>
</body>
</html>
"""
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page's Content-Security-Policy: its own style and script, frames and JSON from this server only.
CSP = (
    f"default-src 'none'; img-src 'self'; connect-src 'self'; style-src {_sha256(STYLE)}; "
    f"script-src {_sha256(SCRIPT)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
