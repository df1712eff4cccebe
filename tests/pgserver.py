"""A throwaway PostgreSQL cluster for the tests (issue 16).

``start()`` runs ``initdb`` into a fresh temp directory and ``pg_ctl start``
on a free TCP port bound to 127.0.0.1 with its unix socket inside that
directory; ``Server.stop()`` stops it (fast, then immediate) and removes the
directory. ``fsync`` stays on so durability tests mean something; only
``initdb`` skips its own syncs (the cluster is thrown away).

PostgreSQL refuses to run as root: as uid 0 the directory is chown'ed to the
``postgres`` user (which Debian's package creates) and every server command
runs as that user through ``runuser``.

``find_bindir()`` looks in ``FILEMEM_PG_BINDIR``, on ``PATH`` and in Debian's
``/usr/lib/postgresql/<v>/bin``; None means no server binaries on this machine.
``pgvector_bindir()`` is the ``pgserver`` wheel's PostgreSQL 16, which bundles
pgvector (Debian has no pgvector package): ``FILEMEM_PG_BINDIR=$(python -m
tests.pgserver --pgvector-bindir)`` runs the whole postgres suite on it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["Server", "find_bindir", "pgvector_bindir", "start"]

_START_TIMEOUT_S = 60


def find_bindir() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    given = os.environ.get("FILEMEM_PG_BINDIR")
    if given:
        return given
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return os.path.dirname(on_path)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return os.path.dirname(versions[-1]) if versions else None


def pgvector_bindir() -> str | None:
    """The bin directory of the ``pgserver`` wheel's PostgreSQL (it has pgvector), or None if not installed.

    Found without importing ``pgserver`` (its import pulls in more than these binaries).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = os.path.join(next(iter(spec.submodule_search_locations)), "pginstall", "bin")
    return bindir if os.path.exists(os.path.join(bindir, "initdb")) else None


def _reachable(bindir: str, root: str) -> str:
    """``bindir``, or a copy of its installation under ``root`` when the ``postgres`` user cannot run it.

    As root the server runs as ``postgres``, which cannot enter a private
    directory (a CI virtualenv under ``mktemp -d`` is mode 0700); the copy
    keeps the installation's layout (bin, lib, share, and the wheel's
    ``pgserver.libs``), which its binaries find relative to themselves.
    """
    probe = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", os.path.join(bindir, "initdb")], check=False
    )
    if probe.returncode == 0:
        return bindir
    inst = os.path.dirname(bindir)  # .../pgserver/pginstall
    pkg = os.path.dirname(inst)
    site = os.path.dirname(pkg)
    dest = os.path.join(root, "install", os.path.basename(pkg), os.path.basename(inst))
    shutil.copytree(inst, dest, symlinks=True)
    # A wheel's binaries find their bundled libraries by RPATH $ORIGIN/../../../<pkg>.libs: copy those beside.
    libs = os.path.join(site, os.path.basename(pkg) + ".libs")
    if os.path.isdir(libs):
        shutil.copytree(libs, os.path.join(root, "install", os.path.basename(libs)), symlinks=True)
    return os.path.join(dest, os.path.basename(bindir))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running throwaway cluster; ``url`` reaches it over TCP as its superuser."""

    root: str
    bindir: str
    port: int
    user: str
    as_postgres: bool

    @property
    def datadir(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def url(self) -> str:
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=_START_TIMEOUT_S)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl -D <data> <args>`` as the server's user (tests restart the server with it)."""
        return self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, *args, check=check)

    def start_server(self) -> None:
        """``pg_ctl start`` and wait until it accepts connections."""
        log = os.path.join(self.root, "server.log")
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} -c fsync=on"
        self.pg_ctl("-w", "-t", str(_START_TIMEOUT_S), "-l", log, "-o", opts, "start")

    def restart(self, mode: str = "immediate") -> None:
        """Restart with the same options; ``immediate`` is a crash of the server (recovery replays its WAL)."""
        # -l: the server's output must not hold our capture pipe open.
        log = os.path.join(self.root, "server.log")
        self.pg_ctl("-w", "-t", str(_START_TIMEOUT_S), "-m", mode, "-l", log, "restart")

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and remove its directory; never raises."""
        try:
            if self.pg_ctl("-w", "-t", "20", "-m", "fast", "stop", check=False).returncode != 0:
                self.pg_ctl("-w", "-t", "20", "-m", "immediate", "stop", check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def start(bindir: str) -> Server:
    """initdb + start a cluster in a new temp directory; the caller must ``stop()`` it."""
    root = tempfile.mkdtemp(prefix="filemem-pg-")
    as_postgres = os.geteuid() == 0
    user = pwd.getpwuid(os.geteuid()).pw_name
    if as_postgres:
        pw = pwd.getpwnam("postgres")  # KeyError: no postgres user (install Debian's postgresql package)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o755)  # a copy of the binaries may live in here (_reachable)
        user = "postgres"
        bindir = _reachable(bindir, root)
    server = Server(root, bindir, _free_port(), user, as_postgres)
    try:
        server._run(
            os.path.join(bindir, "initdb"),
            "-D",
            server.datadir,
            "-U",
            user,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        try:
            server.start_server()
        except subprocess.CalledProcessError:
            # The port may have been taken between _free_port and start: once more on another.
            server.port = _free_port()
            server.start_server()
    except BaseException:
        server.stop()
        raise
    return server


if __name__ == "__main__":
    # python -m tests.pgserver: a throwaway server until Ctrl-C, for running the tests by hand.
    import signal
    import sys

    if sys.argv[1:] == ["--pgvector-bindir"]:
        print(pgvector_bindir() or "")
        raise SystemExit(0)
    found = find_bindir()
    if found is None:
        raise SystemExit("no PostgreSQL server binaries (initdb); install postgresql")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    srv = start(found)
    print(f"export FILEMEM_PG_URL={srv.url}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        srv.stop()
