"""Artifacts at real sizes, on MariaDB and SQLite: inputs stored by reference (lineage, not
copies), contents compressed above a threshold, one size limit with a clear error, the
in-process caches bounded in bytes."""
import base64
import os
import random
import re
import zlib

import pytest

from pipeline_service import InvalidInputError
from pipeline_service.engine.caches import EngineCaches
from pipeline_service.dag import Dag
from pipeline_service.engine.records import InputRecipe, TaskPlan
from pipeline_service.ids import new_id, now_ms
from pipeline_service.json_objects import to_json
from pipeline_service.store.packing import ZSTD_MAGIC

DIAMOND = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]
UNICODE = "草稿 — première ébauche, naïve café; Ελληνικά; emoji 😀🚀; "


def steps(step_type, shape=DIAMOND):
    return [{"step_name": name, "step_type": step_type, **({"depends_on": deps} if deps else {})}
            for name, deps in shape]


def noise(chars):
    """Text no compressor can make much smaller (random base64)."""
    return base64.b64encode(os.urandom(chars * 3 // 4 + 3)).decode("ascii")[:chars]


async def artifact(service, tenant, task_id, step_name, kind, version):
    return await service.storage.atomic(lambda tx: tx.fetch_one(
        "get_artifact", tenant_id=tenant, task_id=task_id, step_name=step_name, kind=kind, version=version))


def drafting(calls, size=0):
    async def handler(tenant_id, task_id, step_name, input_data, config):
        calls[step_name] = input_data
        return {"by": step_name, "text": (UNICODE * (size // len(UNICODE) + 1))[:size],
                "seen": sorted(input_data.get("upstream", {}))}
    return handler


async def test_inputs_are_stored_by_reference_and_handlers_and_readers_get_them_in_full(
        stepper, tenant, pipeline_id, step_type):
    calls = {}
    stepper.register_handler(step_type, drafting(calls, size=20_000))
    await stepper.define_pipeline(pipeline_id, steps(step_type))
    task = await stepper.submit(tenant, pipeline_id, "o", "by reference", {"topic": "ünïcode"})
    for _ in range(3):
        await stepper.executor.run_once()
    assert (await stepper.detail(tenant, task["id"]))["status"] == "succeeded"
    outputs = {n: (await stepper.node(tenant, task["id"], n))["output"] for n, _ in DIAMOND}
    expected = {"a": {"params": {"topic": "ünïcode"}, "upstream": {}},
                "b": {"params": {"topic": "ünïcode"}, "upstream": {"a": outputs["a"]}},
                "c": {"params": {"topic": "ünïcode"}, "upstream": {"a": outputs["a"]}},
                "d": {"params": {"topic": "ünïcode"}, "upstream": {"b": outputs["b"], "c": outputs["c"]}}}
    assert calls == expected  # what each handler got
    for name, _ in DIAMOND:  # what a person reads
        assert (await stepper.node(tenant, task["id"], name))["input"] == expected[name]
        row = await artifact(stepper, tenant, task["id"], name, "input", 1)
        # stored: the lineage only, never a copy of the params or of the 20 KB outputs
        assert row["content"] is None and row["packed"] is None and row["source"] == "engine"
        assert len(row["lineage"]) < 40
    assert len(outputs["d"]["text"]) == 20_000 and outputs["d"]["seen"] == ["b", "c"]


async def test_an_input_is_made_from_the_database_when_nothing_is_cached(stepper, tenant, pipeline_id, step_type):
    calls = {}
    stepper.register_handler(step_type, drafting(calls, size=5_000))
    await stepper.define_pipeline(pipeline_id, steps(step_type))
    task = await stepper.submit(tenant, pipeline_id, "o", "cold", {"p": [1, 2]})
    await stepper.executor.run_once()
    stepper.caches.inputs.clear()  # as in another process: what it needs is read
    stepper.caches.outputs.clear()
    stepper.caches.plans.clear()
    await stepper.executor.run_once()
    a = (await stepper.node(tenant, task["id"], "a"))["output"]
    assert calls["b"] == calls["c"] == {"params": {"p": [1, 2]}, "upstream": {"a": a}}


async def test_a_handler_changing_its_input_changes_no_one_elses(stepper, tenant, pipeline_id, step_type):
    async def vandal(tenant_id, task_id, step_name, input_data, config):
        seen = {k: dict(v) for k, v in input_data["upstream"].items()}
        for out in input_data["upstream"].values():
            out["by"] = "vandal"
        input_data["params"]["p"] = "changed"
        return {"by": step_name, "seen": seen}
    stepper.register_handler(step_type, vandal)
    await stepper.define_pipeline(pipeline_id, steps(step_type))
    task = await stepper.submit(tenant, pipeline_id, "o", "vandal", {"p": "kept"})
    for _ in range(3):
        await stepper.executor.run_once()
    d = (await stepper.node(tenant, task["id"], "d"))["output"]
    assert d["seen"] == {"b": {"by": "b", "seen": {"a": {"by": "a", "seen": {}}}},
                         "c": {"by": "c", "seen": {"a": {"by": "a", "seen": {}}}}}
    assert (await stepper.node(tenant, task["id"], "d"))["input"]["params"] == {"p": "kept"}


async def test_a_manual_input_edit_is_stored_and_used_verbatim(stepper, tenant, pipeline_id, step_type):
    calls = {}
    stepper.register_handler(step_type, drafting(calls))
    await stepper.define_pipeline(pipeline_id, steps(step_type, [("a", []), ("b", ["a"])]))
    task = await stepper.submit(tenant, pipeline_id, "o", "edit", {"p": 1})
    for _ in range(2):
        await stepper.executor.run_once()
    typed = {"params": {"p": "typed"}, "upstream": {"a": {"by": "a person"}}, "note": "多语言"}
    await stepper.modify(tenant, task["id"], {"b": {"input": typed}})
    await stepper.executor.run_once()
    assert calls["b"] == typed
    node = await stepper.node(tenant, task["id"], "b")
    assert node["input"] == typed and node["input_version"] == 2
    row = await artifact(stepper, tenant, task["id"], "b", "input", 2)
    assert row["source"] == "manual" and row["content"] == to_json(typed)
    other = {"anything": ["a person", "typed"]}  # not even the params/upstream shape
    await stepper.modify(tenant, task["id"], {"b": {"input": other}})
    await stepper.executor.run_once()
    assert calls["b"] == other and (await stepper.node(tenant, task["id"], "b"))["input"] == other


async def test_an_input_stored_as_a_full_copy_by_an_older_version_still_reads(stepper, tenant, pipeline_id,
                                                                              step_type):
    calls = {}
    stepper.register_handler(step_type, drafting(calls))
    await stepper.define_pipeline(pipeline_id, steps(step_type, [("a", []), ("b", ["a"])]))
    task = await stepper.submit(tenant, pipeline_id, "o", "old rows", {"p": 1})
    await stepper.executor.run_once()  # a ran; b is ready with input version 1 (by reference)
    old = {"params": {"p": "as copied then"}, "upstream": {"a": {"by": "the copy"}}}
    async def write_old_row(tx):  # as the engine stored inputs before they were references
        b_id = (await tx.fetch_one("get_step", tenant_id=tenant, task_id=task["id"], step_name="b"))["id"]
        await tx.execute("insert_artifact", id=new_id(), tenant_id=tenant, task_id=task["id"], step_name="b",
                         kind="input", version=2, content=to_json(old), packed=None, source="engine",
                         lineage=to_json({"a": 1}), now=now_ms())
        await tx.execute("set_manual_input", id=b_id, tenant_id=tenant, input_version=2, now=now_ms())
    await stepper.storage.atomic(write_old_row)  # b, ready, now runs on that input
    stepper.caches.inputs.clear()
    await stepper.executor.run_once()
    assert calls["b"] == old
    assert (await stepper.node(tenant, task["id"], "b"))["input"] == old


@pytest.mark.parametrize("size", [30_000, 3_000_000])
async def test_large_outputs_are_stored_compressed_and_read_back_unchanged(stepper, tenant, pipeline_id, step_type,
                                                                           size):
    calls = {}
    stepper.register_handler(step_type, drafting(calls, size=size))
    await stepper.define_pipeline(pipeline_id, steps(step_type, [("a", []), ("b", ["a"])]))
    task = await stepper.submit(tenant, pipeline_id, "o", "big", {})
    done = await stepper.executor.run_once()
    # packed when the handler returned, from its checked UTF-8: the recording transaction only writes it
    stored = done.outcomes[0].output_stored
    assert stored is not None and stored.content is None and stored.packed.startswith(ZSTD_MAGIC)
    stepper.caches.outputs.clear()  # the successor's input is made from the stored (compressed) row
    await stepper.executor.run_once()
    text = (UNICODE * (size // len(UNICODE) + 1))[:size]
    a = (await stepper.node(tenant, task["id"], "a"))["output"]
    assert a == {"by": "a", "text": text, "seen": []}
    assert calls["b"]["upstream"]["a"] == a
    row = await artifact(stepper, tenant, task["id"], "a", "output", 1)
    assert row["content"] is None and bytes(row["packed"]).startswith(ZSTD_MAGIC)  # a Zstandard frame
    assert len(row["packed"]) < len(to_json(a).encode("utf-8")) / 5  # repetitive text: much smaller
    small = await artifact(stepper, tenant, task["id"], "a", "input", 1)
    assert small["packed"] is None


async def test_an_output_packed_with_zlib_by_an_older_version_still_reads(stepper, tenant, pipeline_id, step_type):
    stepper.register_handler(step_type, drafting({}, size=100))
    await stepper.define_pipeline(pipeline_id, steps(step_type, [("a", [])]))
    task = await stepper.submit(tenant, pipeline_id, "o", "zlib rows", {})
    await stepper.executor.run_once()
    old = {"text": UNICODE * 500}  # as versions before Zstandard packed it
    await stepper.storage.atomic(lambda tx: tx.execute(
        "insert_artifact", id=new_id(), tenant_id=tenant, task_id=task["id"], step_name="a", kind="output",
        version=2, content=None, packed=zlib.compress(to_json(old).encode("utf-8"), 1), source="engine",
        lineage=to_json({"input_version": 1}), now=now_ms()))
    assert (await stepper.node(tenant, task["id"], "a", version=2))["output"] == old
    assert (await stepper.node(tenant, task["id"], "a", version=1))["output"]["text"] == (UNICODE * 2)[:100]


CHINESE = ("这是一份由模型写成的中文草稿，讲述生产线如何把一次手工验证过的流程固定下来，"
           "然后按计划为许多租户反复运行；每一步的输入与输出都保存为不可变的版本，"
           "有人审批，也有人修改后从下游重新运行。")


async def test_a_long_chinese_output_is_stored_compressed(stepper, tenant, pipeline_id, step_type):
    """Compression is decided on the UTF-8 bytes (three a character here), not on the number of
    characters: a 3,000-character Chinese draft (~9 KB) is over the 8 KB threshold, and a draft
    whose compressed form is smaller than its bytes, though larger than its character count, is
    stored compressed."""
    varied = random.Random(7)  # characters drawn from the text's own: ~2 bytes a character compressed
    for draft in ((CHINESE * 40)[:3_000], "".join(varied.choice(CHINESE) for _ in range(10_000))):
        chars = len(draft)

        async def chinese(tenant_id, task_id, step_name, input_data, config, draft=draft):
            return {"draft": draft}
        stepper.register_handler(step_type, chinese)
        await stepper.define_pipeline(pipeline_id, steps(step_type, [("a", [])]))
        task = await stepper.submit(tenant, pipeline_id, "o", f"{chars} characters", {})
        await stepper.executor.run_once()
        row = await artifact(stepper, tenant, task["id"], "a", "output", 1)
        utf8 = len(to_json({"draft": draft}).encode("utf-8"))
        assert row["content"] is None and bytes(row["packed"]).startswith(ZSTD_MAGIC), chars
        assert len(row["packed"]) < utf8
        stepper.caches.outputs.clear()
        assert (await stepper.node(tenant, task["id"], "a"))["output"] == {"draft": draft}


async def test_an_output_compression_would_not_shrink_is_stored_as_text(make_service, database, tenant,
                                                                         pipeline_id, step_type):
    """Above the threshold (0: everything) but too short to gain: a Zstandard frame of a few bytes
    of JSON is longer than they are, so the row keeps the text (content), not the frame."""
    async def tiny(tenant_id, task_id, step_name, input_data, config):
        return {"ok": 1}
    service = make_service(database, autostart=False, compress_above=0)
    await service.storage.create_missing_tables(include_reference=True)
    service.register_handler(step_type, tiny)
    await service.define_pipeline(pipeline_id, steps(step_type, [("a", [])]))
    task = await service.submit(tenant, pipeline_id, "o", "tiny", {})
    (outcome,) = (await service.executor.run_once()).outcomes
    assert outcome.output_stored.packed is None and outcome.output_stored.content == '{"ok":1}'
    row = await artifact(service, tenant, task["id"], "a", "output", 1)
    assert row["packed"] is None and row["content"] == '{"ok":1}'
    assert (await service.node(tenant, task["id"], "a"))["output"] == {"ok": 1}


async def test_compression_is_an_option(make_service, database, tenant, pipeline_id, step_type):
    for compress_above, packed in ((None, False), (0, True), (100_000, False)):
        calls = {}
        service = make_service(database, autostart=False, compress_above=compress_above)
        await service.storage.create_missing_tables(include_reference=True)
        service.register_handler(step_type, drafting(calls, size=50_000))
        await service.define_pipeline(pipeline_id, steps(step_type, [("a", [])]))
        task = await service.submit(tenant, pipeline_id, "o", "option", {})
        await service.executor.run_once()
        row = await artifact(service, tenant, task["id"], "a", "output", 1)
        assert (row["packed"] is not None) == packed and (row["content"] is None) == packed
        assert len((await service.node(tenant, task["id"], "a"))["output"]["text"]) == 50_000
        await service.stop(timeout=1)
    with pytest.raises(InvalidInputError, match="compress_above"):
        make_service(database, compress_above=-1)


async def test_an_output_past_the_limit_fails_its_attempt_naming_the_limit(make_service, database, tenant,
                                                                           pipeline_id, step_type):
    service = make_service(database, autostart=False, max_content_bytes=100_000)
    await service.storage.create_missing_tables(include_reference=True)
    service.register_handler(step_type, drafting({}, size=150_000))
    await service.define_pipeline(pipeline_id, steps(step_type, [("a", []), ("b", ["a"])]))
    task = await service.submit(tenant, pipeline_id, "o", "too big", {})
    (outcome,) = (await service.executor.run_once()).outcomes
    assert "the limit is 100,000 bytes (the max_content_bytes option)" in outcome.error
    detail = await service.detail(tenant, task["id"])
    assert detail["status"] == "failed" and "max_content_bytes" in detail["steps"][0]["error"]
    assert await artifact(service, tenant, task["id"], "a", "output", 1) is None  # nothing half-written
    with pytest.raises(InvalidInputError, match=re.escape("the limit is 100,000 bytes (the max_content_bytes")):
        await service.modify(tenant, task["id"], {"a": {"output": {"text": "x" * 100_001}}})
    assert (await service.node(tenant, task["id"], "a"))["versions"] == [
        {"kind": "input", "version": 1, "source": "engine", "lineage": {},
         "created_at": (await service.node(tenant, task["id"], "a"))["versions"][0]["created_at"]}]
    with pytest.raises(InvalidInputError, match="max_content_bytes"):
        make_service(database, max_content_bytes=10)


async def test_an_output_past_max_allowed_packet_fails_its_attempt_by_name(make_service, mysql_schema, tenant,
                                                                           pipeline_id, step_type):
    """MariaDB's max_allowed_packet (16 MiB here) below the content limit: a result that cannot
    be written in one statement fails its attempt with that limit's name, and the connection,
    the batch and the other steps carry on."""
    service = make_service(mysql_schema, autostart=False, max_content_bytes=64 * 1024 * 1024)
    big = noise(12 * 1024 * 1024)

    async def handler(tenant_id, task_id, step_name, input_data, config):
        return {"text": big} if tenant_id == tenant else {"fine": True}
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, steps(step_type, [("a", [])]))
    task = await service.submit(tenant, pipeline_id, "o", "past the packet", {})
    fine = await service.submit(tenant + "-ok", pipeline_id, "o", "fine", {})
    outcomes = {o.claim.tenant_id: o for o in (await service.executor.run_once()).outcomes}
    assert "max_allowed_packet" in outcomes[tenant].error and "16,777,216" in outcomes[tenant].error
    assert outcomes[tenant + "-ok"].output == {"fine": True}
    assert (await service.detail(tenant, task["id"]))["status"] == "failed"
    assert await artifact(service, tenant, task["id"], "a", "output", 1) is None
    assert (await service.detail(tenant + "-ok", fine["id"]))["status"] == "succeeded"
    # an edit, or params, that could not be written in one statement: refused by name, nothing written
    with pytest.raises(InvalidInputError, match="max_allowed_packet"):
        await service.modify(tenant + "-ok", fine["id"], {"a": {"output": {"text": big}}})
    assert [v["version"] for v in (await service.node(tenant + "-ok", fine["id"], "a"))["versions"]] == [1, 1]
    with pytest.raises(InvalidInputError, match="max_allowed_packet"):
        await service.submit(tenant + "-p", pipeline_id, "o", "big params", {"text": big})
    assert (await service.list(tenant + "-p"))["total"] == 0


async def test_a_chinese_output_past_max_allowed_packet_is_refused_by_its_bytes_not_its_characters(
        make_service, mysql_schema, tenant, pipeline_id, step_type, caplog):
    """Five million Chinese characters, not compressed (compress_above=None): 15 MB of UTF-8, past
    what one write of a 16 MiB max_allowed_packet takes, though its character count is not.  The
    attempt fails naming the limit before anything is sent — no connection is dropped."""
    service = make_service(mysql_schema, autostart=False, compress_above=None)
    big = "草" * 5_000_000

    async def handler(tenant_id, task_id, step_name, input_data, config):
        return {"text": big} if tenant_id == tenant else {"fine": True}
    service.register_handler(step_type, handler)
    await service.define_pipeline(pipeline_id, steps(step_type, [("a", [])]))
    task = await service.submit(tenant, pipeline_id, "o", "past the packet", {})
    await service.submit(tenant + "-ok", pipeline_id, "o", "fine", {})
    outcomes = {o.claim.tenant_id: o for o in (await service.executor.run_once()).outcomes}
    assert "15,000,011 bytes as stored" in outcomes[tenant].error and "max_allowed_packet" in outcomes[tenant].error
    assert outcomes[tenant + "-ok"].output == {"fine": True}
    assert (await service.detail(tenant, task["id"]))["status"] == "failed"
    assert not [r for r in caplog.records if "Lost connection" in r.getMessage() or r.exc_info]


def test_the_artifact_caches_are_bounded_in_bytes_and_entries():
    caches = EngineCaches(cache_bytes=1024 * 1024)
    for i in range(100):
        caches.remember_output(("t", "k", f"s{i}", 1), "x" * 50_000)
    assert caches.outputs.currsize <= 1024 * 1024 and len(caches.outputs) == 20
    caches.remember_output(("t", "k", "huge", 1), "x" * 100_000)  # past 1/16 of the cache: not kept
    assert ("t", "k", "huge", 1) not in caches.outputs
    for i in range(10_000):
        caches.remember_output(("t", "k", f"small{i}", 1), "{}")
        caches.remember_input(("t", "k", f"small{i}", 1), InputRecipe(None, {"a": 1}))
    assert len(caches.outputs) <= 4096 and len(caches.inputs) <= 4096
    assert EngineCaches().cache_bytes == 64 * 1024 * 1024
    plan = TaskPlan(Dag.from_rows([{"step_name": "a", "step_type": "t", "depends_on": "[]", "config": "{}",
                                    "seq": 1}], "plan"), {"a": "id"}, to_json({"p": "x" * 6_000_000}))
    caches.remember_plan(("t", "big params"), plan)  # params count: ~10,000 steps' worth, still kept
    assert caches.plans.currsize >= 10_000
    caches.remember_plan(("t", "huger"), TaskPlan(plan.dag, plan.ids, to_json({"p": "x" * 30_000_000})))
    assert ("t", "huger") not in caches.plans  # past the whole bound: read when needed
    with pytest.raises(InvalidInputError, match="cache_bytes"):
        EngineCaches(cache_bytes=0)
