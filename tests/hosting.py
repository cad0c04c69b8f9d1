"""Real ahserver hosts for the tests, configured as production hosts are: config.json
with ``password_key``, the database password AES-encoded with it, a non-root MariaDB
user, driver ``aiomysql``, and a ``logger`` writing to a file."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from appPublic.aes import aes_encode_b64

from conftest import mysql_parts, mysql_user

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_KEY = "a host's own key, never the password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_config(db, user, password, options=None):
    """A config.json as an ecosystem host keeps it."""
    parts = mysql_parts()
    config = {
        "password_key": PASSWORD_KEY,
        "logger": {"name": "test-host", "levelname": "info", "logfile": "$[workdir]$/host.log"},
        "databases": {"pipeline": {"driver": "aiomysql", "kwargs": {
            "host": parts["host"], "port": parts["port"], "user": user,
            "password": aes_encode_b64(PASSWORD_KEY, password), "db": db}}},
        "website": {"paths": [["$[workdir]$/wwwroot", ""]], "host": "127.0.0.1", "port": 9080, "coding": "utf-8",
                    "indexes": ["index.html"], "processors": [[".dspy", "dspy"], [".ui", "bui"]],
                    "session_max_time": 3000, "session_reissue_time": 2500},
    }
    if options:
        config["pipeline_service"] = options
    return config


def write_host(workdir, app_dir, db, user, password, options=None):
    """A host folder: its app, conf/config.json and wwwroot (the module's pages mounted)."""
    mysql_user(user, password, db)
    workdir = Path(workdir)
    (workdir / "app").mkdir(parents=True, exist_ok=True)
    for source in Path(app_dir).iterdir():
        if source.is_file():
            (workdir / "app" / source.name).write_bytes(source.read_bytes())
    (workdir / "wwwroot").mkdir(exist_ok=True)
    if not (workdir / "wwwroot" / "pipeline_service").exists():
        (workdir / "wwwroot" / "pipeline_service").symlink_to(ROOT / "wwwroot")
    (workdir / "conf").mkdir(exist_ok=True)
    (workdir / "conf" / "config.json").write_text(json.dumps(host_config(db, user, password, options)))
    return workdir


class Host:
    """One server process of a host folder."""

    def __init__(self, workdir, env=None):
        self.workdir, self.port = Path(workdir), free_port()
        self.output = open(self.workdir / "stdout.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "app/host.py", "-w", str(self.workdir), "-p", str(self.port)], cwd=self.workdir,
            stdout=self.output, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        return "".join((self.workdir / name).read_text() for name in ("stdout.log", "host.log")
                       if (self.workdir / name).exists())

    def wait_listening(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the host did not start:\n" + self.log())
                time.sleep(0.1)

    def terminate(self, timeout=30):
        """SIGTERM, as a deploy does; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.output.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output.close()


class SessionUser:
    """A person of a host, logged in through its login page: calls the module's endpoints with
    the session cookie (the tenant is the session's org)."""
    def __init__(self, base, session):
        self.base, self.session, self.cookie = base, session, None

    async def login(self, userid, orgid):
        async with self.session.get(f"{self.base}/login.dspy", params={"userid": userid, "orgid": orgid}) as r:
            assert r.status == 200
            self.cookie = r.cookies["AIOHTTP_SESSION"].value
        return self

    async def raw(self, op, method, api, params):
        headers = {"Cookie": f"AIOHTTP_SESSION={self.cookie}"} if self.cookie else {}
        url = f"{self.base}/pipeline_service/{'api/' if api else ''}{op}.dspy"
        kwargs = {"params": params} if method == "GET" else {"data": params}
        async with self.session.request(method, url, headers=headers, **kwargs) as r:
            return r.status, r.headers, await r.text()

    async def call(self, op, method="GET", **params):
        """The JSON API: (HTTP status, answer)."""
        status, _, body = await self.raw(op, method, True, params)
        return status, json.loads(body)

    async def ui(self, op, method="GET", **params):
        """The bricks UI: the answer (always HTTP 200)."""
        status, _, body = await self.raw(op, method, False, params)
        assert status == 200, body
        return json.loads(body)

    async def ok(self, op, method="GET", **params):
        """The JSON API, for a call that must succeed: its data."""
        status, body = await self.call(op, method, **params)
        assert status == 200 and body["status"] == "ok", (op, status, body)
        return body["data"]

    async def until(self, task_id, done, what, timeout=60):
        """The task's detail once ``done(detail)`` holds, read over HTTP."""
        deadline = time.monotonic() + timeout
        while True:
            detail = await self.ok("detail", task_id=task_id)
            if done(detail):
                return detail
            assert time.monotonic() < deadline, f"{what} did not happen over HTTP: {detail}"
            await asyncio.sleep(0.1)
