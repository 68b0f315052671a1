"""A real PostgreSQL server for tests: Debian's binaries (`apt-get install postgresql`), on 127.0.0.1.

`PostgresServer.start()` runs initdb in a fresh directory and starts the server on a free loopback port (as the
`postgres` user when the tests run as root: PostgreSQL refuses root), with a password-protected superuser as
the Kubernetes overlay has (`user`, a random hex `password`, scram-sha-256); `create_database()` gives each test
a database of its own, `run_sql()` runs a script such as the overlay's init SQL; `stop()` ends the server and
removes its directory. `find_bin()` is None when no server
binaries are installed (the tests then skip and say how to install them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import secrets
import uuid
from pathlib import Path

from tests.helpers import free_port, require_module, unavailable


def find_bin() -> Path | None:
    """The directory of initdb/pg_ctl: Debian's newest /usr/lib/postgresql/N/bin, else the PATH."""
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(os.path.join(path, "initdb"), os.X_OK):
            return Path(path)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


class PostgresServer:
    def __init__(self, bin_dir: Path, user: str = "postgres", password: str | None = None):
        self.bin_dir = bin_dir
        self.user, self.password = user, password or secrets.token_hex(16)
        self.dir = Path(tempfile.mkdtemp(prefix="llmops-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as = []
        if os.geteuid() == 0:  # PostgreSQL does not run as root
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = (self.dir / "server.log")
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}{proc.stderr}"
                               f"{log.read_text() if log.exists() else ''}")

    def start(self) -> "PostgresServer":
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync=off", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        # the driver as users name it: none (SQLAlchemy's default for postgresql://, psycopg2)
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (a random name unless given); its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.run_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def run_sql(self, script: str, database: str = "postgres") -> None:
        """The statements of `script` (separated by `;`, `--` comments allowed), each in its own transaction."""
        from chatbot_model.store.db import Database

        lines = [line.split("--", 1)[0] for line in script.splitlines()]
        engine = Database(self.url(database)).make_engine()  # the installed driver
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for statement in " ".join(lines).split(";"):
                    if statement.strip():
                        conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bin() -> str:
    """The directory of the PostgreSQL server binaries, with the driver importable; else `unavailable`."""
    bin_dir = find_bin()
    if bin_dir is None:
        unavailable("no PostgreSQL server binaries: `apt-get install postgresql` to run these tests on PostgreSQL")
    require_module("psycopg2", "the postgres extra: pip install 'llmops-chatbot[postgres]'")
    return bin_dir
