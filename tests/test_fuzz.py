"""Every public function, fuzzed on both backends: only package errors (PipelineError) ever
escape, and a refused call writes nothing.

A fixed budget (derandomized, ``max_examples`` per function) keeps the run short and the same
in CI.  The service runs no executor, so the tables change only by the calls made here, and a
snapshot of every table before and after a refused call must be equal.
"""
import asyncio
import json
import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_service import PipelineService
from pipeline_service.exceptions import InvalidInputError, PipelineError
from pipeline_service.json_objects import stored_json, stored_json_utf8, to_json
from pipeline_service.status import TASK_STATUSES
from conftest import mysql_admin, scratch_mysql_database, scratch_name

TABLES = ("pipeline_tasks", "pipeline_task_steps", "pipeline_artifacts", "pipeline_schedules", "pipelines",
          "pipeline_steps")
JSON_COLUMNS = ("params", "content", "lineage", "config", "depends_on")
BUDGET = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TENANT, PIPELINE, OWNER = "fz-tenant", "fz-pipeline", "fz-owner"


class World:
    """One backend with a pipeline and a task in it, and a way to read every row."""

    def __init__(self, backend, tmp_path_factory):
        self.loop = asyncio.new_event_loop()
        if backend == "mysql":
            self.database = scratch_name("fuzz")
            url = scratch_mysql_database(self.database)
        else:
            self.path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
            url = f"sqlite:///{self.path}"
        self.backend = backend
        # one connection for every snapshot (autocommit: each read sees the latest rows); a new
        # MariaDB connection per snapshot cost ~30 ms, most of this module's time
        self.reader = (mysql_admin(database=self.database) if backend == "mysql" else
                       sqlite3.connect(self.path, isolation_level=None))
        self.service = PipelineService(url, autostart=False, require_handlers=False)
        self.run(self.service.storage.create_missing_tables(include_reference=True))
        self.run(self.service.define_pipeline(PIPELINE, [{"step_name": "a", "step_type": "fz"},
                                                         {"step_name": "b", "step_type": "fz", "depends_on": ["a"]}]))
        self.task = self.run(self.service.submit(TENANT, PIPELINE, OWNER, "t", {"n": 1}))["id"]
        self.schedule = self.run(self.service.schedule_create(TENANT, PIPELINE, OWNER, every=3600))["id"]

    def run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def snapshot(self):
        """Every row of every table, as {table: [{column: value}]}."""
        cur = self.reader.cursor()
        try:
            found = {}
            for table in TABLES:
                cur.execute(f"SELECT * FROM {table} ORDER BY id")
                names = [d[0].lower() for d in cur.description]
                found[table] = [dict(zip(names, row)) for row in cur.fetchall()]
            return found
        finally:
            cur.close()

    def close(self):
        self.reader.close()
        self.run(self.service.stop(timeout=5))
        self.loop.close()


@pytest.fixture(scope="module", params=["mysql", "sqlite"])
def world(request, tmp_path_factory):
    found = World(request.param, tmp_path_factory)
    yield found
    found.close()


def strict(constant):
    raise AssertionError(f"{constant} stored as if it were JSON")


def call_refuses_cleanly(world, make_call):
    """Run one call: it raises a PipelineError having written nothing, or it succeeds having
    stored only strict JSON."""
    before = world.snapshot()
    try:
        world.run(make_call())
    except PipelineError:
        assert world.snapshot() == before, "a refused call changed the tables"
        return
    for rows in world.snapshot().values():
        for row in rows:
            for column in JSON_COLUMNS:
                if row.get(column):
                    json.loads(row[column], parse_constant=strict)


# ---- what is drawn ------------------------------------------------------------------------------

nasty_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs", "Cc", "Cf", "Zs"])), max_size=40)
nasty = st.sampled_from(["", " ", "\t", "x" * 33, "x" * 65, "x" * 256, "ACME", " fz-tenant", "fz-tenant ",
                         "FZ-TENANT", "fż-tenant", "a\ud800", "\udc80", "a\x00", "\u200b", "[" * 1000, "NaN",
                         "Infinity", "{\"a\": NaN}", math.nan, math.inf, -math.inf, 10**30, -1, 0, 2**63])
garbage = st.one_of(
    nasty, st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=4),
    st.lists(st.integers(), max_size=2), nasty_text, st.builds(object))


def mostly(good, bad):
    """``good`` about two times in three (so calls get past their first argument), else ``bad``."""
    return st.integers(0, 2).flatmap(lambda i: good if i else bad)


def ids(*known):
    return mostly(st.sampled_from(known), st.one_of(nasty, garbage))


def keys(*known):
    """``ids`` that can be a dict's key: what a caller could pass (a list cannot be one)."""
    return ids(*known).filter(lambda value: not isinstance(value, list))


def nested(depth):
    value = {}
    for _ in range(depth):
        value = {"a": value}
    return value


texts = mostly(st.one_of(st.none(), nasty_text), garbage)
small_ints = mostly(st.one_of(st.none(), st.integers(1, 3)), st.one_of(st.integers(), garbage))
good_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=10))
bad_leaf = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, "a\ud800", "\udc80"]), nasty_text,
                     st.sets(st.integers(), max_size=2), st.builds(object))
leaf = mostly(good_leaf, bad_leaf)
json_like = st.recursive(leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(nasty_text, st.integers()), inner, max_size=3)),
    max_leaves=8)
objects = mostly(st.dictionaries(nasty_text, json_like, max_size=4), st.one_of(
    st.integers(50, 200).map(nested), st.just({"big": "x" * (5 * 1024 * 1024)}), garbage))
seconds = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -1, 0, 1e300, 86_401, 0.5]), garbage)
configs = st.one_of(objects, st.fixed_dictionaries({}, optional={"timeout": seconds, "retry_delay": seconds,
                                                                 "retries": st.one_of(st.integers(), garbage)}))
step = st.fixed_dictionaries({"step_name": ids("s1", "s2", "S1"), "step_type": ids("fz")}, optional={
    "depends_on": mostly(st.lists(ids("s1", "s2"), max_size=2), garbage), "config": configs, "seq": small_ints,
    "dependson": garbage})
steps = mostly(st.lists(mostly(step, garbage), max_size=3), garbage)
edit = st.dictionaries(st.sampled_from(["output", "input", "x"]), objects, min_size=1, max_size=2)
updates = mostly(st.dictionaries(keys("a", "b"), mostly(edit, garbage), max_size=2), garbage)
tenants, tasks, step_names = ids(TENANT), ids("task"), ids("a", "b", "A")


# ---- one test per public function ---------------------------------------------------------------

@BUDGET
@given(tenant=tenants, pipeline=ids(PIPELINE), owner=ids(OWNER), title=texts, params=st.one_of(st.none(), objects))
def test_submit(world, tenant, pipeline, owner, title, params):
    call_refuses_cleanly(world, lambda: world.service.submit(tenant, pipeline, owner, title, params))


keys = mostly(st.one_of(st.none(), st.sampled_from(["k1", "k2"])), garbage)
priorities = mostly(st.one_of(st.none(), st.integers(0, 9)), st.one_of(st.integers(), garbage))


@BUDGET
@given(tenant=tenants, pipeline=ids(PIPELINE, "fz-other"), owner=ids(OWNER), key=keys, priority=priorities)
def test_submit_with_a_key_and_a_priority(world, tenant, pipeline, owner, key, priority):
    call_refuses_cleanly(world, lambda: world.service.submit(tenant, pipeline, owner, None, None,
                                                             idempotency_key=key, priority=priority))


crons = mostly(st.sampled_from(["*/5 * * * *", "0 3 * * MON"]), st.one_of(garbage, st.sampled_from(
    ["* * * *", "61 * * * *", "0 0 30 2 *", "* * * * * *", "@daily", "*/0 * * * *"])))
every = mostly(st.integers(10, 10**6), st.one_of(st.integers(), garbage))
moments = mostly(st.sampled_from(["2099-01-01T00:00", "2099-06-01T12:00:00+08:00"]),
                 st.one_of(garbage, st.sampled_from(["2001-01-01T00:00", "tomorrow", "2099-13-01T00:00"])))
zones = mostly(st.one_of(st.none(), st.sampled_from(["UTC", "Asia/Shanghai", "Europe/Berlin"])),
               st.one_of(garbage, st.sampled_from(["Nope/Zone", "../../etc/passwd", "/etc/localtime", "utc "])))
policies = mostly(st.sampled_from(["skip", "queue", "cancel_previous", "none", "once", "all"]), garbage)


@BUDGET
@given(tenant=tenants, pipeline=ids(PIPELINE), owner=ids(OWNER),
       timing=st.fixed_dictionaries({}, optional={"cron": crons, "every": every, "at": moments}),
       params=st.one_of(st.none(), objects), title=texts, timezone=zones, overlap=policies, catch_up=policies,
       priority=priorities)
def test_schedule_create(world, tenant, pipeline, owner, timing, params, title, timezone, overlap, catch_up,
                         priority):
    call_refuses_cleanly(world, lambda: world.service.schedule_create(
        tenant, pipeline, owner, params=params, title=title, timezone=timezone, overlap=overlap,
        catch_up=catch_up, priority=priority, **timing))


@BUDGET
@given(tenant=tenants, schedule=ids("schedule"), page=small_ints, rows=small_ints,
       operation=st.sampled_from(["schedule_pause", "schedule_resume", "schedule_run_now", "schedule_delete"]))
def test_schedule_operations(world, tenant, schedule, page, rows, operation):
    schedule = world.schedule if schedule == "schedule" else schedule
    call_refuses_cleanly(world, lambda: world.service.schedule_list(tenant, page, rows))
    call_refuses_cleanly(world, lambda: getattr(world.service, operation)(tenant, schedule))


@BUDGET
@given(tenant=tenants, pipeline=st.one_of(st.none(), ids(PIPELINE)),
       status=st.one_of(st.none(), st.sampled_from(TASK_STATUSES), garbage),
       page=small_ints, rows=small_ints)
def test_list(world, tenant, pipeline, status, page, rows):
    call_refuses_cleanly(world, lambda: world.service.list(tenant, pipeline, status, page, rows))


@BUDGET
@given(tenant=tenants, task=tasks, step=step_names, version=small_ints)
def test_detail_and_node(world, tenant, task, step, version):
    task = world.task if task == "task" else task
    call_refuses_cleanly(world, lambda: world.service.detail(tenant, task))
    call_refuses_cleanly(world, lambda: world.service.node(tenant, task, step, version))


@BUDGET
@given(tenant=tenants, task=tasks, operation=st.sampled_from(["pause", "resume", "cancel"]))
def test_pause_resume_cancel(world, tenant, task, operation):
    task = world.task if task == "task" else task
    call_refuses_cleanly(world, lambda: getattr(world.service, operation)(tenant, task))


@BUDGET
@given(tenant=tenants, task=tasks, changes=updates, rerun_from=st.one_of(st.none(), step_names))
def test_modify(world, tenant, task, changes, rerun_from):
    task = world.task if task == "task" else task
    call_refuses_cleanly(world, lambda: world.service.modify(tenant, task, changes, rerun_from))


@BUDGET
@given(tenant=tenants, task=tasks, step=step_names, payload=mostly(objects, garbage),
       actor=st.one_of(st.none(), texts, garbage))
def test_signal(world, tenant, task, step, payload, actor):
    task = world.task if task == "task" else task
    call_refuses_cleanly(world, lambda: world.service.signal(tenant, task, step, payload, actor))


@BUDGET
@given(pipeline=ids("fz-other", "FZ-PIPELINE"), definition=steps, name=texts, description=texts)
def test_define_pipeline(world, pipeline, definition, name, description):
    call_refuses_cleanly(world, lambda: world.service.define_pipeline(pipeline, definition, name, description))


@BUDGET
@given(step_type=ids("fz-handler"), fn=st.one_of(st.just(lambda *args: {}), garbage))
def test_register_handler(world, step_type, fn):
    before = world.service.handlers.step_types()
    try:
        world.service.register_handler(step_type, fn)
    except PipelineError:
        assert world.service.handlers.step_types() == before
    else:
        world.service.unregister_handler(step_type)


options = st.fixed_dictionaries({}, optional={
    name: st.one_of(garbage, st.integers(-2, 100), st.floats(-1, 100))
    for name in ("concurrency", "tenant_concurrency", "poll_interval", "lease_seconds", "max_crashes",
                 "create_schema", "autostart", "require_handlers", "handlers", "timezone")})
databases = st.one_of(st.sampled_from([
    "sqlite:///fz.db", "sqlite:///", "sqlite://x", "mysql://root@127.0.0.1:99999/db", "mysql://root@h:abc/db",
    "mysql://[::1/db", "mysql://root@h/", "postgres://h/db", "", {"driver": "mysql", "kwargs": {"port": "x", "db": "d"}},
    {"driver": "nope"}, {"driver": "sqlite", "kwargs": {"path": "fz.db"}}]), garbage)


@BUDGET
@given(database=databases, chosen=options)
def test_service_options(database, chosen):
    try:
        PipelineService(database, **chosen)  # nothing is opened before the first call
    except PipelineError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=objects)
def test_a_stored_text_is_the_json_the_standard_encoder_writes(value):
    # stored_json writes with orjson what its walk lets through; the JSON must be the same,
    # and the bytes it hands to the compressor must be that text's UTF-8
    try:
        text, utf8 = stored_json_utf8(value, "a result")
    except InvalidInputError:
        return  # what is refused, and how, the tests above cover
    assert json.loads(text) == json.loads(to_json(value))
    assert utf8 == text.encode("utf-8")


def test_what_orjson_cannot_write_goes_to_the_standard_encoder():
    big = {"n": 2 ** 70, "neg": -(2 ** 80), "f": 1e-7, "text": "草稿 ü \u2028"}
    assert json.loads(stored_json(big, "a result")) == big  # exact digits, not a float
    text, utf8 = stored_json_utf8(big, "a result")
    assert utf8 == text.encode("utf-8")
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        stored_json({"s": "a\ud800"}, "a result")
    with pytest.raises(InvalidInputError, match="the limit is 10 bytes"):
        stored_json({"n": 2 ** 70}, "a result", max_bytes=10)
