"""`ember mcp serve` driven by the official SDK's client: over stdio (a real subprocess) and streamable HTTP
(a loopback port), including refusal without the API key. The collection is built by `ember ingest`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import mcp
import pytest

from ember.agents.mcp_client import McpError, McpHub, McpServerConfig
from tests.net import free_port

from ..platform.test_cli import EMBER, run

DOCS = {
    "quokkas.md": "# Quokkas\n\nQuokkas are small marsupials that live on Rottnest Island near Perth.\n",
    "kettles.txt": "A kettle boils water for tea. Electric kettles switch off when the water boils.\n",
    "bridges.md": "# Bridges\n\nThe Golden Gate Bridge spans the strait at the entrance to San Francisco Bay.\n",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mcp")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    out = run("ingest", "docs", "--collection", "animals", cwd=root, env={"EMBER_DATA_DIR": str(root / "data")})
    assert out.returncode == 0, out.stderr
    return root / "data"


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")} | {"EMBER_DATA_DIR": str(data_dir)} \
        | extra


def text(result: object) -> str:
    block = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(block, mcp.types.TextContent)
    return block.text


async def exercise(client: mcp.Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"list_collections", "search_documents", "ask"}
    assert tools["search_documents"].input_schema["required"] == ["collection", "query"]
    annotations = tools["search_documents"].annotations
    assert annotations is not None and annotations.read_only_hint
    listed = json.loads(text(await client.call_tool("list_collections", {})))
    assert listed == [{"name": "animals", "documents": 3, "chunks": 3, "embedder": listed[0]["embedder"]}]
    result = await client.call_tool("search_documents", {"collection": "animals", "query": "Where do quokkas live?",
                                                         "k": 2})
    hits = json.loads(text(result))
    assert not result.is_error and len(hits) == 2 and hits[0]["source"].endswith("quokkas.md")
    assert "Rottnest Island" in hits[0]["text"]
    missing = await client.call_tool("search_documents", {"collection": "nope", "query": "x"})
    assert missing.is_error and "nope" in text(missing) and "animals" in text(missing)
    resources = (await client.list_resources()).resources
    assert len(resources) == 3 and {r.name for r in resources} >= {"Quokkas", "Bridges"}
    quokka = next(r for r in resources if r.name == "Quokkas")
    body = (await client.read_resource(str(quokka.uri))).contents[0]
    assert isinstance(body, mcp.types.TextResourceContents)
    assert "Rottnest Island" in body.text and str(quokka.uri) == hits[0]["uri"]


def test_stdio_including_ask_with_the_real_model(data_dir: Path, smollm2_folder: Path) -> None:
    params = mcp.StdioServerParameters(command=EMBER, args=["mcp", "serve", "--model", str(smollm2_folder)],
                                       env=env_for(data_dir, EMBER_ENGINE__KV_CACHE_MB="128"))

    async def main() -> None:
        async with mcp.Client(params, mode="legacy", read_timeout_seconds=180) as client:
            await exercise(client)
            result = await client.call_tool("ask", {"collection": "animals", "question": "Where do quokkas live?"})
            assert not result.is_error, text(result)
            answer = json.loads(text(result))
            assert answer["answer"].strip() and answer["citations"]
            assert answer["citations"][0]["source"].endswith("quokkas.md")

    anyio.run(main)


@pytest.fixture(scope="module")
def store_key(data_dir: Path) -> str:
    """A key made by `ember keys create` (the server's hashed key store), which `ember mcp serve` accepts."""
    out = run("keys", "create", "mcp-test", cwd=data_dir, env={"EMBER_DATA_DIR": str(data_dir)})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def http_server(data_dir: Path, store_key: str) -> Iterator[str]:
    port = free_port()
    env = env_for(data_dir, EMBER_MCP__API_KEYS='["sha256:' + __import__("hashlib").sha256(b"s3cret").hexdigest()
                  + '", "other-key"]')
    proc = subprocess.Popen([EMBER, "mcp", "serve", "--transport", "http", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def test_http_with_api_key(http_server: str) -> None:
    async def main() -> None:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async with create_mcp_http_client(headers={"Authorization": "Bearer s3cret"}) as http, \
                mcp.Client(streamable_http_client(http_server, http_client=http)) as client:
            await exercise(client)

    anyio.run(main)


def test_http_refuses_requests_without_a_valid_key(http_server: str, store_key: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        r = httpx.post(http_server, json=body, headers=headers, timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["type"] == "unauthorized"
    with pytest.raises(McpError, match="failed to start"):  # our client, with a wrong token
        McpHub([McpServerConfig("ember", url=http_server, bearer_token="wrong", startup_timeout_s=20)]).start()
    # ... and with the right ones (a plain key from mcp.api_keys; a key from `ember keys create`): our
    # client's HTTP transport end to end
    for key in ("other-key", store_key):
        with McpHub([McpServerConfig("ember", url=http_server, bearer_token=key)]) as hub:
            hits = json.loads(hub.call_tool("ember", "search_documents", {"collection": "animals", "query": "tea"}))
            assert hits[0]["source"].endswith("kettles.txt")


def test_ember_is_usable_from_python_without_the_console_script() -> None:
    out = subprocess.run([sys.executable, "-c", "import ember.agents.mcp_server, ember.agents.react"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_builtin_collection_tools_search_and_read(data_dir: Path) -> None:
    from ember.agents.builtins import collection_tools
    from ember.agents.tools import ToolError
    from ember.retrieval.collection import Collection
    from ember.retrieval.retriever import Retriever

    col = Collection.open(data_dir, "animals")
    try:
        tools = {t.name: t for t in collection_tools(Retriever(col, None, mode="bm25", k=3))}
        found = tools["search_collection"]({"query": "quokkas Rottnest", "k": 1})
        assert found.startswith("[1] Quokkas (chunk ") and "Rottnest Island" in found and "kettle" not in found
        assert "Rottnest Island near Perth" in tools["read_document"]({"title": "Quokkas"})
        assert "Golden Gate" in tools["read_document"]({"title": "bridges"})  # case-insensitive fallback
        with pytest.raises(ToolError, match="no document titled 'Unicorns'"):
            tools["read_document"]({"title": "Unicorns"})
    finally:
        col.close()
