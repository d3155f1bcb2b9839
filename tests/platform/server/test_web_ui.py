"""The chat page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): upload the bundled docs,
ask how to revoke an API key, watch the answer stream in as rendered Markdown, open a citation. Saves a screenshot
as a test artifact. The answer must name `ember keys revoke`, which SmolLM2-135M cannot do (it answers "create a
new key"), so this test runs the model `make run` serves (the Makefile's SERVE_MODEL, pulled by `make setup`)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ember.model.adapter import shipped_adapter
from ember.model.backends.ember import EmberBackend
from ember.model.engine.llm_engine import EngineConfig
from ember.platform.server.run import build_state
from ember.platform.settings import Settings
from ember.retrieval.embedders import SentenceTransformerEmbedder

from .conftest import DOCS, REPO, LiveServer, ServerFactory

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
pytestmark = [pytest.mark.smollm2, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]


SERVE_MODEL = re.search(r"^SERVE_MODEL\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def default_engine() -> Iterator[EmberBackend]:
    folder = REPO / ".ember" / "models" / SERVE_MODEL
    if not (folder / "ember-source.json").is_file():
        pytest.skip(f"{SERVE_MODEL} is not pulled (ember models pull {SERVE_MODEL}; make setup does it)")
    b = EmberBackend.from_path(folder, config=EngineConfig(kv_cache_bytes=256 << 20, max_model_len=4096),
                               quantization="auto", adapter=shipped_adapter(SERVE_MODEL))  # as `make run` serves
    yield b
    b.close()


@pytest.fixture
def default_server(tmp_path: Path, default_engine: EmberBackend, embedder: SentenceTransformerEmbedder
                   ) -> Iterator[LiveServer]:
    st = build_state(Settings(data_dir=tmp_path / "data", model=SERVE_MODEL), default_engine, SERVE_MODEL,
                     lambda spec: embedder)
    s = LiveServer(st)
    yield s
    s.stop()


def test_upload_ask_stream_and_open_citation(default_server: LiveServer, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    server = default_server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # the page runs under its Content-Security-Policy (issue 18): nothing it needs may be blocked
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
            response = page.goto(server.url + "/")
            assert response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]
            page.click("#upload-box summary")
            page.fill("#new-collection", "mydocs")
            docs = sorted(DOCS.glob("*.md"))
            page.set_input_files("#file", [str(d) for d in docs])
            page.click("#upload")
            page.wait_for_selector("#upload-status[data-done=true]", timeout=120_000)
            assert f"Indexed {len(docs)} file(s)" in page.inner_text("#upload-status")
            assert page.input_value("#collection") == "mydocs"

            # count the tokens as they arrive: the answer must grow in several steps, not appear at once
            page.evaluate("""() => { window.lengths = []; new MutationObserver(() => {
                const t = document.querySelector('.msg.assistant .text');
                if (t) window.lengths.push(t.textContent.length); })
                .observe(document.getElementById('messages'),
                         {subtree: true, childList: true, characterData: true}); }""")
            page.fill("#question", "How do I revoke an API key?")
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-done=true]", timeout=300_000)
            answer = page.inner_text(".msg.assistant .text")
            lengths = page.evaluate("window.lengths")
            assert "ember keys revoke" in answer and len(set(lengths)) >= 3, (answer, lengths, _what_it_saw(server))
            assert page.locator(".msg.assistant .text code").count() >= 1  # Markdown rendered: `ember keys ...`
            assert page.locator(".msg.assistant .text script").count() == 0
            # the passages the answer cites as [n] come first (marked .cited), then the rest it was given
            citations = page.locator(".msg.assistant .citation")
            assert citations.count() >= 1 and "server.md" in citations.first.inner_text(), answer

            citations.first.click()
            page.wait_for_selector("#passage[open]")
            assert "ember keys revoke" in page.inner_text("#passage-text")
            assert "API keys" in page.inner_text("#passage-where")
            assert page.locator("#sessions li").count() == 1
            assert page.inner_text("#sessions li") == "How do I revoke an API key?"
            shot = tmp_path / "web_ui.png"
            page.screenshot(path=str(shot), full_page=True)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(shot, ARTIFACTS / "web_ui.png")
            print(f"screenshot: {ARTIFACTS / 'web_ui.png'}")
            # the conversation list: start a new chat, then reopen the first one with its citations
            page.click("#passage .close")
            page.click("#new-chat")
            assert page.locator(".msg").count() == 0
            page.click("#sessions li")
            page.wait_for_selector(".msg.assistant .citation")
            assert page.inner_text(".msg.user .text") == "How do I revoke an API key?"
            assert page.inner_text(".msg.assistant .text") == answer
            assert errors == []
        finally:
            browser.close()


def _what_it_saw(server: LiveServer) -> object:
    """The stored conversations (each answer's passages and whether it cited them), for the failure message."""
    try:
        with server.client() as c:
            return [[(m.get("role"), str(m.get("content"))[:200],
                      [(x.get("source"), x.get("location"), x.get("relevance"), x.get("cited"))
                       for x in m.get("citations") or []])
                     for m in c.get(f"/v1/sessions/{s['id']}").json()["messages"]]
                    for s in c.get("/v1/sessions").json()["data"]]
    except Exception as e:  # the message must not hide the assertion
        return f"(could not read the sessions: {e!r})"


def test_page_asks_for_the_api_key_when_keys_are_configured(make_server: ServerFactory) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    server = make_server()
    server.state.create_collection("notes").close()
    key = server.state.keys.create("browser")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")  # the static shell loads without a key; its API calls get 401
            page.wait_for_selector("#key-box:not([hidden])")
            assert page.locator("#collection option").count() == 0
            page.fill("#api-key", key)
            page.click("#save-key")
            page.wait_for_selector("#collection option[value=notes]", state="attached")
            assert page.evaluate("localStorage.getItem('ember-key')") == key
        finally:
            browser.close()
