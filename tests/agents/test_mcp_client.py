"""Our MCP client against real servers as stdio subprocesses: the reference `mcp-server-time` and
`mcp-server-git` from PyPI, and small misbehaving servers written with the official SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ember.agents.mcp_client import McpError, McpHub, McpServerConfig
from ember.agents.tools import Toolbox, ToolError

BIN = Path(sys.executable).parent
MISBEHAVING = str(Path(__file__).parent / "servers" / "misbehaving.py")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


def test_mcp_server_time_lists_and_converts() -> None:
    with McpHub([McpServerConfig("time", command=str(BIN / "mcp-server-time"))]) as hub:
        tools = {t.name: t for t in hub.tools()}
        assert set(tools) == {"get_current_time", "convert_time"} and not tools["convert_time"].mutating
        out = json.loads(tools["convert_time"]({"source_timezone": "Europe/Paris", "time": "09:30",
                                                 "target_timezone": "Asia/Tokyo"}))
        assert out["target"]["datetime"].endswith("17:30:00+09:00") and out["time_difference"] == "+8.0h"
        with pytest.raises(ToolError, match="Invalid timezone"):  # isError result -> ToolError
            tools["get_current_time"]({"timezone": "Mars/Olympus"})
        with pytest.raises(ToolError, match="'timezone' is a required property"):  # validated before sending
            tools["get_current_time"]({})


def test_mcp_server_git_on_a_temporary_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=Tester"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "notes.txt").write_text("quokkas\n")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "Add notes about quokkas"], check=True)
    (repo / "notes.txt").write_text("quokkas and wombats\n")
    config = McpServerConfig("git", command=str(BIN / "mcp-server-git"), args=["--repository", str(repo)])
    with McpHub([config]) as hub:
        box = Toolbox(hub.tools())
        assert {"git_status", "git_log", "git_diff_unstaged"} <= set(box.tools)
        assert {"git_commit", "git_add", "git_reset"} <= set(box.refused)  # they change the repository
        assert "Add notes about quokkas" in box.call("git_log", {"repo_path": str(repo)})
        assert "modified:   notes.txt" in box.call("git_status", {"repo_path": str(repo)})
        assert "+quokkas and wombats" in box.call("git_diff_unstaged", {"repo_path": str(repo)})
        allowed = Toolbox(hub.tools(), allow=["git.git_add"])
        assert "git_add" in allowed and "git_commit" not in allowed


def test_one_session_per_run_and_no_process_outlives_the_hub() -> None:
    hub = McpHub([McpServerConfig("bad", command=sys.executable, args=[MISBEHAVING])]).start()
    try:
        assert [hub.call_tool("bad", "counter", {}) for _ in range(3)] == ["1", "2", "3"]  # one stateful session
        pid = json.loads(hub.call_tool("bad", "pid", {}))["pid"]
        assert alive(pid)
        with pytest.raises(ToolError, match=r"fail reported an error: .*boom"):
            hub.call_tool("bad", "fail", {"message": "boom"})
    finally:
        hub.close()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_server_that_crashes_mid_call() -> None:
    config = McpServerConfig("bad", command=sys.executable, args=[MISBEHAVING], timeout_s=20)
    with McpHub([config]) as hub:
        t0 = time.monotonic()
        with pytest.raises(ToolError, match=r"bad\.crash failed|not running"):
            hub.call_tool("bad", "crash", {"reason": "test"})
        assert time.monotonic() - t0 < 15  # noticed the dead process, did not wait for the timeout
        with pytest.raises(ToolError):
            hub.call_tool("bad", "counter", {})


def test_server_that_never_answers_a_call() -> None:
    with McpHub([McpServerConfig("bad", command=sys.executable, args=[MISBEHAVING], timeout_s=1.0)]) as hub:
        with pytest.raises(ToolError, match="did not answer within 1s"):
            hub.call_tool("bad", "hang", {})
        assert hub.call_tool("bad", "counter", {}) == "1"  # the session survives a timed-out call


def test_server_that_never_speaks_mcp() -> None:
    config = McpServerConfig("silent", command=sys.executable, args=[MISBEHAVING, "--silent"], startup_timeout_s=2)
    with pytest.raises(McpError, match="did not start within 2s"):
        McpHub([config]).start()
    with pytest.raises(McpError, match="failed to start"):
        McpHub([McpServerConfig("missing", command=str(BIN / "no-such-server"))]).start()
