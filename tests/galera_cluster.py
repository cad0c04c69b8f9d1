"""A MariaDB Galera cluster on loopback, for the high-availability tests and benchmark.

Each node has its own data directory, client port and Galera ports, and runs as the
``mysql`` user (rsync state transfer refuses to run as root). The first node bootstraps
the cluster; the others join it by state transfer, one after the other; ``start`` returns
once every node reports itself synced. A test user ``pipeline`` (password ``pipeline``)
and the database ``pipeline_ha`` exist on every node.

    python tests/galera_cluster.py start [--nodes 3] [--dir /tmp/pipeline_galera]
    python tests/galera_cluster.py stop [--dir /tmp/pipeline_galera]
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
USER, PASSWORD, DATABASE = "pipeline", "pipeline", "pipeline_ha"
# the command line's ports — node i: CLIENT_PORT + i; GALERA_PORT + 10 * i (+1 IST, +2 SST); tests
# and benchmarks take free ports instead (free_ports), so that two runs never meet
CLIENT_PORT, GALERA_PORT = 4400, 4600
DEFAULT_DIR = Path("/tmp/pipeline_galera")


@dataclass(frozen=True)
class Node:
    index: int
    root: Path
    port: int          # the client port
    galera_port: int   # group communication
    ist_port: int      # incremental state transfer
    sst_port: int      # full state transfer (rsync)

    @property
    def datadir(self) -> Path:
        return self.root / f"node{self.index}"

    @property
    def socket(self) -> Path:
        return self.root / f"node{self.index}.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / f"node{self.index}.pid"

    @property
    def log(self) -> Path:
        return self.root / f"node{self.index}.err"

    @property
    def url(self) -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None


class Cluster:
    def __init__(self, root: Path = DEFAULT_DIR, size: int = 3, fixed_ports: bool = False) -> None:
        self.root = Path(root)
        if fixed_ports:
            ports = [(CLIENT_PORT + i, GALERA_PORT + 10 * i, GALERA_PORT + 10 * i + 1, GALERA_PORT + 10 * i + 2)
                     for i in range(size)]
        else:
            free = free_ports(4 * size)
            ports = [tuple(free[4 * i:4 * i + 4]) for i in range(size)]
        self.nodes = [Node(i, self.root, *ports[i]) for i in range(size)]
        self.processes: dict[int, subprocess.Popen] = {}

    def gcomm(self) -> str:
        return "gcomm://" + ",".join(f"127.0.0.1:{n.galera_port}" for n in self.nodes)

    def hosts(self) -> list[str]:
        """The client addresses, as the engine's configuration lists them."""
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    # ---- life ------------------------------------------------------------------------
    def start(self, timeout: float = 180.0, attempts: int = 2) -> "Cluster":
        """Start the cluster (stopping whatever it left behind), or stop what started and raise.

        Forming it is tried ``attempts`` times, each from scratch: once, under load on two
        cores, a node joining the forming cluster lost its group view (non-primary) and
        aborted — a failure of the tests' set-up, not of what they test; the clue is printed."""
        for attempt in range(1, attempts):
            try:
                return self._start_afresh(timeout)
            except RuntimeError as exc:
                print(f"galera cluster: forming it failed (attempt {attempt} of {attempts}), trying again from "
                      f"scratch:\n{exc}", file=sys.stderr, flush=True)
        return self._start_afresh(timeout)

    def _start_afresh(self, timeout: float) -> "Cluster":
        self.stop()
        taken = [port for n in self.nodes for port in (n.port, n.galera_port, n.ist_port, n.sst_port)
                 if _in_use(port)]
        if taken:
            raise RuntimeError(f"ports {taken} are in use: is another cluster running? "
                               "(python tests/galera_cluster.py stop --dir <its directory>)")
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "Cluster":
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        shutil.chown(self.root, "mysql", "mysql")
        for node in self.nodes:
            self._install(node)
        self.launch(self.nodes[0], bootstrap=True)
        self.wait_synced(self.nodes[0], timeout)
        self._create_user(self.nodes[0])
        for node in self.nodes[1:]:  # one at a time: each joins by a state transfer from a synced donor
            self.launch(node)
            self.wait_synced(node, timeout)
        return self

    def _install(self, node: Node) -> None:
        done = subprocess.run(["mariadb-install-db", "--user=mysql", f"--datadir={node.datadir}",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed for node{node.index}: {done.stderr[-2000:]}")

    def launch(self, node: Node, bootstrap: bool = False) -> None:
        """Start ``node``'s server (again, after a kill: it rejoins by state transfer)."""
        args = ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={node.datadir}",
                f"--port={node.port}", "--bind-address=127.0.0.1", f"--socket={node.socket}",
                f"--pid-file={node.pidfile}", f"--log-error={node.log}",
                "--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2",
                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M", "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=300", "--wsrep-on=ON", f"--wsrep-provider={PROVIDER}",
                f"--wsrep-cluster-address={'gcomm://' if bootstrap else self.gcomm()}",
                "--wsrep-cluster-name=pipeline_ha", f"--wsrep-node-name=node{node.index}",
                f"--wsrep-node-address=127.0.0.1:{node.galera_port}",
                f"--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{node.galera_port};"
                f"ist.recv_addr=127.0.0.1:{node.ist_port};gcache.size=64M",
                f"--wsrep-sst-receive-address=127.0.0.1:{node.sst_port}",
                "--wsrep-sst-method=rsync", "--wsrep-slave-threads=2"]
        self.processes[node.index] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                      start_new_session=True)

    def kill(self, node: Node) -> None:
        """kill -9 the node's server (what a crash of its machine looks like to the others)."""
        pid = node.pid()
        if pid is not None:
            _signal(pid, signal.SIGKILL)
        process = self.processes.pop(node.index, None)
        if process is not None:
            process.wait(timeout=30)
        node.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        for node in self.nodes:
            pid = node.pid()
            if pid is not None:
                _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for node in self.nodes:
            pid = node.pid()
            while pid is not None and self._alive(node, pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid is not None and self._alive(node, pid):
                _signal(pid, signal.SIGKILL)
            node.pidfile.unlink(missing_ok=True)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def _alive(self, node: Node, pid: int) -> bool:
        # a server this object started is its child: once it exits it stays a zombie that
        # signal 0 still reaches until it is reaped, so ask the Popen (which reaps it)
        process = self.processes.get(node.index)
        if process is not None and process.pid == pid:
            return process.poll() is None
        return _alive(pid)

    # ---- state -----------------------------------------------------------------------
    def status(self, node: Node) -> dict[str, str]:
        conn = pymysql.connect(unix_socket=str(node.socket), user="root", connect_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW STATUS LIKE 'wsrep_%'")
                return {k: v for k, v in cur.fetchall()}
        finally:
            conn.close()

    def synced(self, node: Node) -> bool:
        try:
            status = self.status(node)
        except pymysql.err.MySQLError:
            return False
        return status.get("wsrep_local_state_comment") == "Synced" and status.get("wsrep_ready") == "ON"

    def wait_synced(self, node: Node, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.synced(node):
            process = self.processes.get(node.index)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"galera node{node.index} exited ({process.returncode}); see {node.log}:\n"
                                   + _tail(node.log))
            if time.monotonic() > deadline:
                raise RuntimeError(f"galera node{node.index} not synced after {timeout}s; see {node.log}:\n"
                                   + _tail(node.log))
            time.sleep(0.2)

    def _create_user(self, node: Node) -> None:
        conn = pymysql.connect(unix_socket=str(node.socket), user="root", connect_timeout=5, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
                cur.execute(f"GRANT ALL ON *.* TO '{USER}'@'%'")
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
        finally:
            conn.close()


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports free now (the kernel's choice, held together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def _in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop"))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    cluster = Cluster(args.dir, args.nodes, fixed_ports=True)
    if args.command == "start":
        started = time.monotonic()
        cluster.start()
        print(f"{args.nodes} nodes synced in {time.monotonic() - started:.1f}s: {', '.join(cluster.hosts())}")
        print(f"url of node 0: {cluster.nodes[0].url}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
