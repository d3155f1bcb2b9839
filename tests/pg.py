"""A real, private PostgreSQL for the tests: Debian's `postgresql` package (`.ci/run` installs it), a cluster
made with `initdb` in a temporary folder and started with `pg_ctl` on a free loopback port.

As root the cluster runs as the `postgres` system user (PostgreSQL refuses to run as root); otherwise as the
current user. Where no PostgreSQL binaries are installed, the tests that need one skip, saying so.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.net import free_port

HOW = "install it with `apt-get install -y postgresql` (.ci/run does)"


def unavailable(reason: str) -> NoReturn:
    """Skip, saying why; in CI where PostgreSQL was installable (.ci/run sets CI_REQUIRE_POSTGRES), fail."""
    if os.environ.get("CI_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required here: {reason}")
    pytest.skip(reason)


def bindir() -> Path | None:
    """The folder of `initdb` and `pg_ctl` (Debian keeps them out of PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class Cluster:
    def __init__(self) -> None:
        bins = bindir()
        if bins is None:
            unavailable(f"PostgreSQL is not installed: {HOW}")
        self.bins = bins
        self.root = Path(tempfile.mkdtemp(prefix="ember-pg-"))
        self.as_root = os.getuid() == 0
        if self.as_root:
            if shutil.which("runuser") is None:
                unavailable("PostgreSQL cannot run as root and `runuser` is missing to start it as `postgres`")
            shutil.chown(self.root, "postgres")
            self.root.chmod(0o700)
        self.port = free_port()
        self.data = self.root / "data"
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "ember", "-E", "UTF8", "--no-sync")
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c synchronous_commit=off -c max_connections=200", "start")
        self.url = f"postgresql://ember@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bins / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr or out.stdout}")

    def database(self) -> str:
        """A fresh, empty database on this cluster; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install 'ember[postgres]' (make setup does)")
    cluster = Cluster()
    yield cluster
    from ember.retrieval.sql import close_pools

    close_pools()
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh database for this test."""
    return pg_cluster.database()
