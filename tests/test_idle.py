"""What an idle process costs the database (MariaDB and SQLite): one probe per poll
interval and nothing else — with an empty database, with ready steps of a step type this
process has no handler for, and with 1,000 tasks paused or waiting for a retry.

Every round trip of the package goes through ``sqlor_adapter.execute`` (one call: one
round trip on MariaDB, however many statements it carries), ``commit`` or ``rollback``:
these three are counted, so nothing the process sends escapes the count.
"""
import asyncio
import time

import pytest

from conftest import scratch_mysql_database, scratch_name
from pipeline_service import PipelineService
from pipeline_service.store import sqlor_adapter

POLL = 0.1    # seconds: a short poll interval keeps the test short (each window waits POLLS + 2 of them)
POLLS = 6     # probes in a measured window


class RoundTrips:
    """Everything this process sends to its database, in order: (loop time, statement texts)."""

    def __init__(self, monkeypatch):
        self.sent = []
        execute, commit, rollback = sqlor_adapter.execute, sqlor_adapter.commit, sqlor_adapter.rollback

        async def counted_execute(sor, statements):
            self._note([marked for marked, _ in statements])
            return await execute(sor, statements)

        async def counted_commit(sor, statements=(), alone=False):
            self._note(["COMMIT"])  # its statements, if any, are also noted by execute (MariaDB)
            return await commit(sor, statements, alone=alone)

        async def counted_rollback(sor):
            self._note(["ROLLBACK"])
            return await rollback(sor)
        monkeypatch.setattr(sqlor_adapter, "execute", counted_execute)
        monkeypatch.setattr(sqlor_adapter, "commit", counted_commit)
        monkeypatch.setattr(sqlor_adapter, "rollback", counted_rollback)

    def _note(self, statements):
        self.sent.append((asyncio.get_running_loop().time(), statements))

    async def idle_window(self, polls=POLLS):
        """Wait for two probes (a claim woken before counting began has then ended: the
        dispatch loop runs one thing at a time), then for ``polls`` more; what was sent
        after the second one, and how long the ``polls`` probes took."""
        await self._probes(len(self.sent), 2)
        start, began = len(self.sent), asyncio.get_running_loop().time()
        await self._probes(start, polls)
        window = self.sent[start:]
        return [s for _, s in window], window[-1][0] - began

    async def _probes(self, start, n):
        deadline = time.monotonic() + n * POLL * 10 + 10
        while sum(is_probe(s) for _, s in self.sent[start:]) < n:
            assert time.monotonic() < deadline, f"fewer than {n} probes in {n * POLL * 10 + 10:.0f}s"
            await asyncio.sleep(0.01)


def is_probe(statements):
    """The executor's poll: one statement, alone in its round trip (no COMMIT)."""
    return len(statements) == 1 and "AS runnable" in statements[0]


def assert_idle(sent, elapsed):
    others = [s for s in sent if not is_probe(s)]
    assert not others, f"an idle process sent more than its probe: {others[:3]}"
    # the probes are at least a poll interval apart (less one interval of slack for when
    # the window began): a process that polled faster would send them in far less time
    assert elapsed >= (POLLS - 2) * POLL, f"{POLLS} probes in {elapsed:.2f}s at poll_interval {POLL}s"


@pytest.fixture
def empty_database(backend, tmp_path):
    """A database of this test alone (schema, no rows): nothing of another test to find."""
    if backend == "mysql":
        return scratch_mysql_database(scratch_name("idle"))
    return f"sqlite:///{tmp_path / 'idle.db'}"


@pytest.fixture
async def idle_service(empty_database, step_type):
    """A running service with a handler for ``step_type`` only, on the empty database."""
    async def work(tenant_id, task_id, step_name, input_data, config):
        return {}
    service = PipelineService(empty_database, poll_interval=POLL)
    service.register_handler(step_type, work)
    await service.storage.create_missing_tables(include_reference=True)
    await service.start()
    yield service
    await service.stop(timeout=5)


async def test_an_idle_service_with_an_empty_database_sends_only_its_probe(idle_service, monkeypatch):
    trips = RoundTrips(monkeypatch)
    assert_idle(*await trips.idle_window())


async def test_ready_steps_of_a_type_without_a_handler_here_start_no_claim(idle_service, monkeypatch, tenant,
                                                                           pipeline_id, step_type):
    """Another process's work (a step type this one has no handler for) is ready all the
    while: the probe must not report it, or every poll would start a claim that finds
    nothing to run here (issue #18: idle rose from 1 to ~32 queries/s)."""
    front_end = PipelineService(idle_service.storage, autostart=False, require_handlers=False)
    foreign = step_type + "-elsewhere"  # no handler in this process
    await front_end.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": foreign}])
    for i in range(40):  # 40 tenants: a claim would cost a statement per tenant
        await front_end.submit(f"{tenant}-{i}", pipeline_id, "o", "not ours", {})
    trips = RoundTrips(monkeypatch)
    assert_idle(*await trips.idle_window())
    detail = await front_end.detail(f"{tenant}-0", (await front_end.list(f"{tenant}-0"))["rows"][0]["id"])
    assert detail["steps"][0]["status"] == "pending"  # ready all along, never claimed here


async def test_a_thousand_paused_or_waiting_tasks_cost_nothing_while_idle(empty_database, monkeypatch, tenant,
                                                                          pipeline_id, step_type):
    """500 tasks paused before they started, 500 whose step waits an hour for its retry."""
    failed = []

    async def fail(tenant_id, task_id, step_name, input_data, config):
        failed.append(task_id)
        raise RuntimeError("not now")
    service = PipelineService(empty_database, poll_interval=POLL, autostart=False)
    service.register_handler(step_type, fail)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [
        {"step_name": "a", "step_type": step_type, "config": {"retries": 1, "retry_delay": 3600}},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]}])
    paused = await asyncio.gather(*(service.submit(tenant + "-p", pipeline_id, "o", f"p{i}") for i in range(500)))
    await asyncio.gather(*(service.pause(tenant + "-p", t["id"]) for t in paused))
    await service.start()
    try:
        await asyncio.gather(*(service.submit(tenant + "-w", pipeline_id, "o", f"w{i}") for i in range(500)))
        deadline = time.monotonic() + 60
        while len(failed) < 500 or service.executor._running:  # every first attempt failed and recorded
            assert time.monotonic() < deadline, f"{len(failed)} of 500 first attempts ran in 60s"
            await asyncio.sleep(0.02)
        trips = RoundTrips(monkeypatch)
        assert_idle(*await trips.idle_window())
        assert len(failed) == 500  # nothing ran again, nothing paused ran
        assert (await service.list(tenant + "-p", status="paused", rows=1))["total"] == 500
    finally:
        await service.stop(timeout=5)


async def test_enabled_schedules_none_of_them_due_cost_nothing_while_idle(idle_service, monkeypatch, tenant,
                                                                          pipeline_id, step_type):
    """300 schedules, enabled, none due for an hour: the probe's next_tick says so; no other query."""
    await idle_service.define_pipeline(pipeline_id, [{"step_name": "only", "step_type": step_type}])
    await asyncio.gather(*(idle_service.schedule_create(f"{tenant}-{i % 30}", pipeline_id, "o", every=3600)
                           for i in range(300)))
    trips = RoundTrips(monkeypatch)
    assert_idle(*await trips.idle_window())
    assert (await idle_service.list(f"{tenant}-0"))["total"] == 0


async def test_a_thousand_tasks_waiting_for_approvals_and_timers_cost_nothing_while_idle(
        empty_database, monkeypatch, tenant, pipeline_id, step_type):
    """500 tasks whose approval waits for a person, 500 whose wait step sleeps an hour: none holds a
    slot, and the probe alone notices when one is due (issue #14)."""
    from pipeline_service.steps import approval, wait
    service = PipelineService(empty_database, poll_interval=POLL, autostart=False)
    service.register_handler(step_type + "-approval", approval.run)
    service.register_handler(step_type + "-wait", wait.run)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id + "-a", [
        {"step_name": "ask", "step_type": step_type + "-approval", "config": {"timeout": 3600}}])
    await service.define_pipeline(pipeline_id + "-w", [
        {"step_name": "nap", "step_type": step_type + "-wait", "config": {"seconds": 3600}}])
    for kind in ("a", "w"):
        await asyncio.gather(*(service.submit(f"{tenant}-{kind}{i % 20}", f"{pipeline_id}-{kind}", "o")
                               for i in range(500)))
    await service.start()
    try:
        async def all_waiting():
            counts = [(await service.list(f"{tenant}-{kind}{i}", rows=100))["rows"] for kind in "aw" for i in range(20)]
            return sum(r["progress"]["waiting"] for rows in counts for r in rows) == 1000
        deadline = time.monotonic() + 60
        while not await all_waiting() or service.executor._running:
            assert time.monotonic() < deadline, "1,000 steps did not all wait within 60s"
            await asyncio.sleep(0.1)
        assert not service.executor._slots
        trips = RoundTrips(monkeypatch)
        assert_idle(*await trips.idle_window())
    finally:
        await service.stop(timeout=5)
