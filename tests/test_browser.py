"""Every page of the built book (_build/html, made by `make book`; `make test` builds it first) as
a reader meets it: opened from disk in headless Chromium with the network blocked, so a page that
needs a CDN fails here as it would offline. After MathJax has typeset, a page fails on raw TeX
left in its text (outside code), on an image that did not load, on any error in the console, on a
printed result that scrolls sideways, and on a figure shown smaller than drawn (cpbook.plots draws
figures for the text column, with text of at least 9 pt at that size).

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no driver, no
port, no Python package; `make test` installs Chromium from Debian's packages when it is missing."""
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HTML = Path(__file__).resolve().parents[1] / "_build" / "html"
VIEWPORT = (1280, 900)   # a laptop screen: the book shows its side bar and a text column of about 690 px
# Every host name fails to resolve: anything a page fetches from the network is logged as an error;
# the browser's own background traffic (updates, sync) is switched off.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}")
# TeX that MathJax should have typeset: its delimiters ($$, \( \) \[ \], \begin{...}) anywhere outside
# code, and any \command (\frac, \alpha) in the prose; cell outputs are data, where "\n" is no TeX.
TEX_DELIMITERS = re.compile(r"\$\$|\\[()\[\]]|\\(?:begin|end)\{")
TEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# Errors that every page of a jupyter-book 1.0.4 book logs, each for a reason outside this project:
# sphinx-thebe 0.3.1 adds its inline settings (`const THEBE_JS_URL = ...`) at a point where
# Sphinx 7.4 adds them twice, so the second copy fails. Harmless: thebe (live code) is not used.
KNOWN_ERRORS = ("uncaught: SyntaxError: Identifier 'THEBE_JS_URL' has already been declared",)
# Runs in the page once it has loaded: waits for MathJax's first typesetting, the fonts and every
# image (lazy ones too), then returns the text outside code, in prose and in cell outputs apart,
# and the images that did not load.
CHECK = """(async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  await document.fonts.ready;
  await Promise.all([...document.images].map(img => { img.loading = "eager"; return img.decode().catch(() => null); }));
  const prose = [], outputs = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());)
    if (!node.parentElement.closest("pre, code, script, style, mjx-container"))
      (node.parentElement.closest(".cell_output") ? outputs : prose).push(node.data);
  // a printed result that scrolls sideways, and a figure shown smaller than drawn (its text with it)
  const scrolls = [...document.querySelectorAll(".cell_output, .cell_output *")].filter(el =>
      ["auto", "scroll"].includes(getComputedStyle(el).overflowX) && el.scrollWidth > el.clientWidth + 2)
    .map(el => `${el.scrollWidth} px in ${el.clientWidth}: ${(el.innerText || "").trim().slice(0, 50)}`);
  const shrunk = [...document.querySelectorAll(".cell_output img")].filter(img =>
      img.naturalWidth && img.clientWidth && img.clientWidth < img.naturalWidth - 2)
    .map(img => `${img.getAttribute("src")} at ${img.clientWidth} of its ${img.naturalWidth} px`);
  return {prose: prose.join(" "), outputs: outputs.join(" "), scrolls, shrunk,
          broken_images: [...document.images].filter(img => img.naturalWidth === 0).map(img => img.getAttribute("src"))};
})()"""
PAGE_TIMEOUT = 60   # seconds for one page to load and typeset


class Chromium:
    """One headless Chromium with one tab, spoken to in DevTools protocol messages (JSON, each
    ended by a NUL byte) on its fds 3 (commands) and 4 (replies and events)."""

    def __init__(self, executable: str, profile: Path):
        # the shell moves our stdin and stdout pipes to the fds 3 and 4 that the pipe mode uses
        self.proc = subprocess.Popen(
            ["sh", "-c", 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null', "sh", executable, *FLAGS,
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buffer, self.last_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=self.session)

    def close(self):
        self.proc.kill()
        self.proc.wait()

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        reply = self.receive(lambda m: m.get("id") == self.last_id)
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply["result"]

    def receive(self, done, timeout: float = PAGE_TIMEOUT) -> dict:
        """Read messages until done(message) holds; the events read on the way go to self.events."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                    raise TimeoutError(f"no reply from Chromium in {timeout} s")
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (status {self.proc.wait()})")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            message = json.loads(raw)
            if "method" in message:
                self.events.append(message)
            if done(message):
                return message

    def open(self, url: str) -> str | None:
        """Navigate the tab to url and wait for its load event; the error if it did not open."""
        start = len(self.events)
        error = self.send("Page.navigate", session=self.session, url=url).get("errorText")
        loaded = lambda m: m.get("method") == "Page.loadEventFired"   # noqa: E731
        if not error and not any(loaded(e) for e in self.events[start:]):
            self.receive(loaded)
        return error

    def visit(self, url: str) -> tuple[dict, list[dict]]:
        """Open url in the tab and run CHECK there: its result and the events of this visit (up to
        leaving the page for about:blank, so that late ones count too)."""
        self.events = []
        if error := self.open(url):
            return {"prose": "", "outputs": "", "broken_images": [], "error": error}, self.events
        result = self.send("Runtime.evaluate", session=self.session, expression=CHECK,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the check failed on {url}: {result['exceptionDetails']}")
        events = self.events
        self.open("about:blank")
        return result["result"]["value"], events


def console_errors(events: list[dict]) -> list[str]:
    """The errors among a page's DevTools events: console.error, uncaught exceptions, and what the
    browser logs as an error (a resource that failed to load: a blocked CDN, a missing file)."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            found.append("console." + params["type"] + ": " + " ".join(args))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append("uncaught: " + details.get("exception", {}).get("description", details["text"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            found.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
    return found


def raw_tex(prose: str, outputs: str) -> list[str]:
    """The TeX left untypeset in a page's text outside code, each distinct piece once."""
    found = TEX_DELIMITERS.findall(prose + " " + outputs) + TEX_COMMAND.findall(prose)
    return sorted(set(found))


def problems(found: dict, events: list[dict]) -> list[str]:
    """What is wrong with a visited page, one line each; empty when it is clean."""
    out = [f"did not open: {found['error']}"] if found.get("error") else []
    if tex := raw_tex(found["prose"], found["outputs"]):
        out.append(f"raw TeX in the text: {', '.join(tex)}")
    out += [f"image did not load: {src}" for src in found["broken_images"]]
    out += [f"printed result scrolls sideways ({what})" for what in found.get("scrolls", [])]
    out += [f"figure shown smaller than drawn, so is its text: {what}" for what in found.get("shrunk", [])]
    return out + [e for e in console_errors(events) if e not in KNOWN_ERRORS]


def redirect_target(page: Path) -> Path | None:
    """The page a redirect-only page (Sphinx's root index.html) sends the reader to, if it is one."""
    match = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', page.read_text())
    return (page.parent / match.group(1)).resolve() if match else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    chromium = Chromium(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_raw_tex_in_prose_and_in_outputs():
    assert raw_tex(r"a $$x$$ b \(y\) \[z\] \begin{align} \frac{1}{2}", "") == [
        "$$", r"\(", r"\)", r"\[", r"\]", r"\begin", r"\begin{", r"\frac"]
    assert raw_tex("costs $5, 50% and {braces}", "") == []
    # a cell output is data: an escaped newline there is no TeX, an untypeset formula is
    assert raw_tex("", r"1789.\n\nI'm sorry") == []
    assert raw_tex("", r"loss \(x^2\)") == [r"\(", r"\)"]


def test_the_check_sees_raw_tex_broken_images_errors_and_the_network(browser, tmp_path):
    """A hand-made page with every kind of fault the book test looks for, and the same in code,
    where it is allowed: each fault is reported, nothing in code is."""
    (tmp_path / "ok.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    (tmp_path / "page.html").write_text(
        r"""<html><body><p>loss \(x^2\) and $$y$$</p><pre>\begin{align}</pre><code>\frac{a}{b}</code>
        <img src="ok.svg"><img src="missing.png"><script>console.error("boom")</script>
        <script src="https://cdn.example.org/lib.js"></script></body></html>""")
    found, events = browser.visit((tmp_path / "page.html").as_uri())
    report = problems(found, events)
    assert report[0] == r"raw TeX in the text: $$, \(, \)"
    assert report[1] == "image did not load: missing.png"
    assert "console.error: boom" in report
    assert any("missing.png" in line and "ERR_FILE_NOT_FOUND" in line for line in report)
    assert any("cdn.example.org" in line and "ERR_NAME_NOT_RESOLVED" in line for line in report)
    assert not any("ok.svg" in line for line in report)


def test_every_page_renders_offline(browser):
    pages = sorted(p for p in HTML.rglob("*.html") if not {"_static", "_sources"} & set(p.parts))
    assert (HTML / "index.html") in pages, f"no built book in {HTML}: run `make book` first"
    report = {}
    for page in pages:
        target = redirect_target(page)
        if target is not None:      # nothing to render: its target is checked as a page of its own
            assert target in pages, f"{page.relative_to(HTML)} redirects to a missing {target}"
            continue
        found, events = browser.visit(page.as_uri())
        if found_problems := problems(found, events):
            report[str(page.relative_to(HTML))] = found_problems
    listed = "\n".join(f"  {page}: " + "\n    ".join(lines) for page, lines in report.items())
    assert not report, (f"pages that do not render offline:\n{listed}\n(a page that the build no longer "
                        f"makes stays in _build/html from an older one: `make clean` removes it)")
