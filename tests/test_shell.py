"""The built-in `shell` step type on MariaDB and SQLite (docs/STEP_TYPES.md, "shell")."""
import os

import pytest
from appPublic.dictObject import DictObject

from pipeline_service import HandlerError, InvalidInputError, api
from pipeline_service.host import config as host_config
from conftest import until


def alive(pid):
    """Whether process ``pid`` still runs (a zombie waiting to be reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "shell_root"
    (path / "work").mkdir(parents=True)
    return path


@pytest.fixture
async def shell_service(make_service, database, root):
    service = make_service(database, poll_interval=0.1, shell_root=str(root))
    await service.storage.create_missing_tables(include_reference=True)
    return service


async def run(service, tenant, pipeline_id, config, params=None, timeout=30):
    await service.define_pipeline(pipeline_id, [{"step_name": "sh", "step_type": "shell", "config": config}])
    task = await service.submit(tenant, pipeline_id, "o", "shell", params or {})
    detail = await service.wait(tenant, task["id"], timeout=timeout)
    node = await service.node(tenant, task["id"], "sh")
    return detail, detail["steps"][0], node


async def test_a_command_runs_and_its_output_is_kept(shell_service, tenant, pipeline_id):
    detail, step, node = await run(shell_service, tenant, pipeline_id, {
        "command": "echo working in $(basename \"$PWD\"); echo warned >&2; echo '{\"n\": 3}'", "parse_json": True,
        "workdir": "work"})
    assert detail["status"] == "succeeded", step["error"]
    assert node["output"] == {"exit_code": 0, "stdout": "working in work\n{\"n\": 3}\n", "stderr": "warned\n",
                              "truncated": False, "json": {"n": 3}}


async def test_argv_runs_without_a_shell(shell_service, tenant, pipeline_id, root):
    detail, step, node = await run(shell_service, tenant, pipeline_id, {
        "argv": ["printf", "%s|", "{{ params.a }}", "$HOME", "*"]}, {"a": "x; y"})
    assert detail["status"] == "succeeded", step["error"]
    assert node["output"]["stdout"] == "x; y|$HOME|*|"  # each argument as given: nothing expanded


@pytest.mark.parametrize("config, message", [
    ({"command": "exit 3"}, "exited with code 3"),
    ({"command": "echo the reason >&2; exit 1"}, "the reason"),
    ({"command": "echo not json", "parse_json": True}, "parse_json"),
    ({"command": "true", "workdir": "../"}, "outside the host's shell_root"),
    ({"command": "true", "workdir": "/etc"}, "outside the host's shell_root"),
    ({"command": "true", "argv": ["true"]}, "either command"),
    ({"argv": "true"}, "argv must be a non-empty list"),
    ({"command": "true", "colour": "red"}, "unknown keys colour"),
    ({"command": "true", "ok_exit_codes": "0"}, "ok_exit_codes"),
])
async def test_a_failing_command_fails_the_step_with_a_clear_error(shell_service, tenant, pipeline_id, config,
                                                                  message):
    detail, step, _ = await run(shell_service, tenant, pipeline_id, config)
    assert detail["status"] == "failed" and message in step["error"]


async def test_accepted_exit_codes_and_retries(shell_service, tenant, pipeline_id):
    detail, step, node = await run(shell_service, tenant, pipeline_id, {"command": "exit 3", "ok_exit_codes": [0, 3]})
    assert detail["status"] == "succeeded" and node["output"]["exit_code"] == 3
    detail, step, node = await run(shell_service, tenant, pipeline_id + "r", {
        "command": "if [ -f tried ]; then echo second; else touch tried; exit 1; fi", "workdir": "work",
        "retries": 1})
    assert detail["status"] == "succeeded" and step["attempt"] == 2 and node["output"]["stdout"] == "second\n"


async def test_output_is_limited_to_its_head_and_tail(shell_service, tenant, pipeline_id):
    detail, step, node = await run(shell_service, tenant, pipeline_id, {
        "command": "printf 'HEAD'; head -c 100000 /dev/zero | tr '\\0' x; printf 'TAIL'", "output_limit": 100})
    out = node["output"]
    assert detail["status"] == "succeeded" and out["truncated"] is True
    assert out["stdout"].startswith("HEAD") and out["stdout"].endswith("TAIL") and "[truncated]" in out["stdout"]
    assert len(out["stdout"]) < 200


async def test_the_environment_holds_no_secrets_of_the_host_unless_listed(shell_service, tenant, pipeline_id,
                                                                        monkeypatch):
    monkeypatch.setenv("PIPELINE_TEST_SECRET", "s3cret")
    command = "echo ${PIPELINE_TEST_SECRET:-none} $EXTRA"
    _, _, node = await run(shell_service, tenant, pipeline_id, {"command": command, "env": {"EXTRA": "given"}})
    assert node["output"]["stdout"] == "none given\n"
    _, _, node = await run(shell_service, tenant, pipeline_id + "i", {
        "command": command, "inherit_env": ["PIPELINE_TEST_SECRET"]})
    assert node["output"]["stdout"] == "s3cret\n"


@pytest.mark.parametrize("inherit_env", [["{{ params.name }}"], "{{ params.names }}"])
async def test_params_never_choose_the_host_variables_a_command_inherits(shell_service, pipeline_id, inherit_env):
    with pytest.raises(InvalidInputError, match="config.inherit_env is not templated"):
        await shell_service.define_pipeline(pipeline_id, [{"step_name": "sh", "step_type": "shell", "config": {
            "command": "env", "inherit_env": inherit_env}}])


INJECTIONS = ['"; rm -rf ~"', "; touch pwned", "$(touch pwned)", "`touch pwned`", "' ; touch pwned ; '",
              "\" ; touch pwned ; \"", "a\ntouch pwned", "${IFS}touch${IFS}pwned"]


@pytest.mark.parametrize("command", [
    "echo {{ params.x }}",
    "echo \"{{ params.x }}\"",   # the author quoted it: still never code
    "echo '{{ params.x }}'",
    "echo {{ params.x | upper }} {{ upstream }}",
])
async def test_templated_values_never_run_as_shell_code(shell_service, tenant, pipeline_id, root, command):
    """A tenant's params reach the command as environment variables, whatever the template looks like."""
    (root / "work" / "canary").write_text("still here")
    for i, value in enumerate(INJECTIONS):
        detail, step, node = await run(shell_service, tenant, f"{pipeline_id}{i}", {
            "command": command, "workdir": "work"}, {"x": value})
        assert detail["status"] == "succeeded", step["error"]
        assert not (root / "work" / "pwned").exists(), value
        assert (root / "work" / "canary").read_text() == "still here"
        if "upper" not in command:  # and exactly as given, however the author quoted it
            assert node["output"]["stdout"] == value + "\n"
    assert node["input"]["config"]["command"].count("PIPELINE_VALUE_") >= 1  # what ran, kept with the input
    assert node["input"]["config"]["env"]["PIPELINE_VALUE_1"] in (INJECTIONS[-1], INJECTIONS[-1].upper())


async def test_a_timeout_kills_the_whole_process_tree(shell_service, tenant, pipeline_id, root):
    detail, step, _ = await run(shell_service, tenant, pipeline_id, {
        "command": "sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait", "workdir": "work", "timeout": 1})
    assert detail["status"] == "failed" and "timed out after 1s" in step["error"]
    pids = [int((root / "work" / f).read_text()) for f in ("child.pid", "shell.pid")]
    await until(lambda: not any(alive(p) for p in pids), what="the command's processes to be gone")


async def test_a_cancel_mid_run_kills_the_whole_process_tree(shell_service, tenant, pipeline_id, root):
    await shell_service.define_pipeline(pipeline_id, [{"step_name": "sh", "step_type": "shell", "config": {
        "command": "sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait", "workdir": "work"}}])
    task = await shell_service.submit(tenant, pipeline_id, "o", "to cancel")
    pid_files = [root / "work" / f for f in ("child.pid", "shell.pid")]
    await until(lambda: all(f.exists() and f.read_text().strip() for f in pid_files), what="the command to start")
    pids = [int(f.read_text()) for f in pid_files]
    assert all(alive(p) for p in pids)
    await shell_service.cancel(tenant, task["id"])
    await until(lambda: not any(alive(p) for p in pids), what="the command's processes to be gone")
    assert (await shell_service.detail(tenant, task["id"]))["steps"][0]["status"] == "cancelled"


async def test_shell_is_off_unless_the_host_sets_shell_root(make_service, database, tenant, pipeline_id):
    service = make_service(database, poll_interval=0.1)
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(pipeline_id, [{"step_name": "sh", "step_type": "shell",
                                                 "config": {"command": "true"}}])
    with pytest.raises(HandlerError, match="step 'sh': step type 'shell' runs commands on the host and is off "
                                           "here: the host enables it with the option shell_root"):
        await service.submit(tenant, pipeline_id, "o", "refused")
    assert (await service.list(tenant))["total"] == 0

    async def mine(tenant_id, task_id, step_name, input_data, config):
        return {"ran by": "the host", "command": config["command"]}
    service.register_handler("shell", mine)  # a host's handler replaces the built-in, on or off
    task = await service.submit(tenant, pipeline_id, "o", "the host's own")
    assert (await service.wait(tenant, task["id"]))["status"] == "succeeded"
    assert (await service.node(tenant, task["id"], "sh"))["output"] == {"ran by": "the host", "command": "true"}


@pytest.mark.parametrize("shell_root, message", [
    ("/no/such/dir", "is not a directory"), (3, "must be the path of a directory"), ("", "must be the path")])
def test_a_bad_shell_root_is_refused(tmp_path, shell_root, message):
    from pipeline_service import PipelineService
    with pytest.raises(InvalidInputError, match=message):
        PipelineService(f"sqlite:///{tmp_path / 'x.db'}", shell_root=shell_root)


async def test_configure_and_config_json_enable_shell(tmp_path, root, monkeypatch):
    service = api.configure(f"sqlite:///{tmp_path / 'a.db'}", autostart=False, shell_root=str(root))
    assert service.handlers.get("shell") is not None and service.step_options.shell_root == str(root)
    await api.shutdown()
    # in a host: config.json's pipeline_service entry
    config = DictObject(pipeline_service={"shell_root": str(root), "http_allow": ["example.org"]})
    monkeypatch.setattr(host_config, "host_config", lambda: config)
    monkeypatch.setattr(host_config, "host_database", lambda required=False: f"sqlite:///{tmp_path / 'b.db'}")
    monkeypatch.setattr(api, "_hosted", True)
    try:
        service = api.configure(autostart=False)
        assert service.handlers.get("shell") is not None
        assert service.step_options.http_allow == ("example.org",)
    finally:
        await api.shutdown()
    service = api.configure(f"sqlite:///{tmp_path / 'c.db'}", autostart=False)  # configured again without it
    try:
        assert service.handlers.get("shell") is None and "shell_root" in service.handlers.off("shell")
    finally:
        await api.shutdown()
