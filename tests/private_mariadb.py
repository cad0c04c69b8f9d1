"""A MariaDB server of a test's own: its own data directory and loopback port, started,
killed and restarted by the test, so nothing else using the machine's server is disturbed.

The data directory is made in the system's temporary directory, not under pytest's
tmp_path: pytest keeps its base directory to root alone (mode 0700), and the server
runs as the ``mysql`` user when the tests run as root (mariadbd refuses root).
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
INSTALL_DB = shutil.which("mariadb-install-db") or shutil.which("mariadb-install-db", path="/usr/bin:/usr/local/bin")
START_SECONDS = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateMariaDB:
    """One private server: ``install()``, then ``start()``, ``kill()``, ``start()`` ... ``remove()``."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="pipeline-mariadb-"))
        self.datadir, self.port, self.proc = self.dir / "data", free_port(), None
        # as root the server runs as `mysql`, which must own its files
        self.user = "mysql" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _as_user(self):
        return [f"--user={self.user}"] if self.user else []

    def install(self):
        """A fresh data directory whose root logs in over TCP without a password."""
        subprocess.run([INSTALL_DB, "--no-defaults", *self._as_user(), f"--datadir={self.datadir}",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        return self

    def start(self):
        """Start the server and wait until it answers."""
        log = open(self.dir / "server.out", "a")
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", *self._as_user(), f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir / 'mysqld.sock'}",
             f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self.dir / 'error.log'}",
             "--innodb-buffer-pool-size=64M"],  # small: the tests' data is tiny and the machine shared
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                self.admin().close()
                return self
            except pymysql.err.MySQLError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the private MariaDB did not start: {self.error_log()[-2000:]}")
                time.sleep(0.1)

    def kill(self):
        """Kill the server as a crash would (SIGKILL: no shutdown, InnoDB recovers at the next start)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def remove(self):
        """Stop the server (if it runs) and delete its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin(self, **kw):
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=3,
                               autocommit=True, **kw)

    def database(self, name):
        """Create database ``name`` and return its URL."""
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        conn.close()
        return f"mysql://root@127.0.0.1:{self.port}/{name}"

    def error_log(self):
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""
