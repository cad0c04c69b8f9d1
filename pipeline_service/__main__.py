"""The main command: ``python -m pipeline_service <command>`` (also ``pipeline-service``).

    demo                 run a production line for several tenants, live (no set-up needed;
                         --serve: watch it on the dashboard)
    serve                the dashboard: a tenant's tasks, their DAGs, live (docs/OPERATIONS.md)
    create-schema        create the missing tables (never drops anything)
    load-codes           write init/data.json's code labels into the host's appcodes tables
    submit                           submit a task (--idempotency-key: at most once per key)
    list / detail / node             read a tenant's tasks
    pause / resume / cancel / retry  operate on a tenant's task
    purge                delete a tenant's old finished tasks / old artifact versions (retention)
    schedule-create / schedule-list  a tenant's schedules (cron, every, at)
    schedule-pause / schedule-resume / schedule-delete / schedule-run-now  operate on one
    signal               deliver a decision to a step waiting for one (an approval)

Every command takes ``--db`` (default: the embedded SQLite file pipeline_service.db).
Operator commands change the database only: the host processes run the steps.
"""
import argparse
import asyncio
import json
import os
import sys

from rich.console import Console
from rich.table import Table

from .store.connectors import parse_url
from .exceptions import ConfigurationError, InvalidInputError, PipelineError, SchemaMissingError
from .json_objects import parse_json_object
from .host.config import EMBEDDED_DEFAULT
from .service import PipelineService
from .store.storage import Storage

console = Console()


def parser():
    p = argparse.ArgumentParser(prog="python -m pipeline_service", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help_, tenant=True, task=True):
        c = sub.add_parser(name, help=help_)
        c.add_argument("--db", default=EMBEDDED_DEFAULT,
                       help="mysql://user:pw@host:port/db or sqlite:///file.db (default: %(default)s)")
        if tenant:
            c.add_argument("--tenant", required=True, help="the tenant (organisation) id")
        if task:
            c.add_argument("task_id")
        c.add_argument("--json", action="store_true", help="print the result as JSON")
        return c

    demo = command("demo", "run the demo production line", tenant=False, task=False)
    demo.add_argument("--quick", action="store_true", help="handlers take 1/100 of their time (for tests)")
    demo.add_argument("--serve", action="store_true", help="show the line on the dashboard and keep it up")
    serve = command("serve", "the dashboard: a tenant's tasks and their DAGs, live, in a browser",
                    tenant=False, task=False)
    serve.add_argument("--tenant", help="serve exactly this tenant: the printed address carries a fresh token")
    serve.add_argument("--user", default="dashboard", help="the user the changes are made as (with --tenant)")
    serve.add_argument("--users", metavar="FILE", help='a JSON file {"<token>": {"tenant": "...", "user": "..."}}')
    for c in (demo, serve):
        c.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)")
        c.add_argument("--port", type=int, default=8080, help="(default: %(default)s; 0: any free port)")
    schema = command("create-schema", "create the missing tables", tenant=False, task=False)
    schema.add_argument("--with-reference", action="store_true", help="also pipelines and pipeline_steps")
    command("load-codes", "write the code labels (init/data.json) into the host's appcodes tables",
            tenant=False, task=False)
    lst = command("list", "list a tenant's tasks, newest first", task=False)
    lst.add_argument("--pipeline")
    lst.add_argument("--status")
    lst.add_argument("--page", type=int, default=1)
    lst.add_argument("--rows", type=int, default=20)
    command("detail", "a task with its steps")
    node = command("node", "a step's input and output")
    node.add_argument("step_name")
    node.add_argument("--version", type=int)
    for name in ("pause", "resume", "cancel"):
        command(name, f"{name} a task")
    submit = command("submit", "submit a task of a pipeline", task=False)
    submit.add_argument("pipeline_id")
    submit.add_argument("--owner", required=True, help="the submitting user id")
    submit.add_argument("--title")
    submit.add_argument("--params", help="a JSON object")
    submit.add_argument("--idempotency-key", help="a task already submitted with this key is returned instead")
    submit.add_argument("--priority", type=int, help="0 (last) to 9 (first) within the tenant (default 5)")
    create = command("schedule-create", "submit a pipeline on a schedule (exactly one of --cron, --every, --at)",
                     task=False)
    create.add_argument("pipeline_id")
    create.add_argument("--owner", required=True, help="the owner of the tasks it submits")
    create.add_argument("--cron", help="5 fields: minute hour day-of-month month day-of-week")
    create.add_argument("--every", type=int, help="seconds (at least 10)")
    create.add_argument("--at", help="once, at an ISO-8601 time (without an offset: in --timezone)")
    create.add_argument("--timezone", help="IANA zone of --cron, --at and titles (default: the host's)")
    create.add_argument("--title", help="its tasks' title; {tick}, {date}, {time}: the tick's local time")
    create.add_argument("--params", help="a JSON object")
    create.add_argument("--overlap", default="skip", choices=("skip", "queue", "cancel_previous"))
    create.add_argument("--catch-up", default="none", choices=("none", "once", "all"))
    create.add_argument("--priority", type=int)
    schedules = command("schedule-list", "a tenant's schedules with their last runs", task=False)
    schedules.add_argument("--page", type=int, default=1)
    schedules.add_argument("--rows", type=int, default=20)
    for name in ("pause", "resume", "delete", "run-now"):
        one = command(f"schedule-{name}", f"{name.replace('-', ' ')} a schedule", task=False)
        one.add_argument("schedule_id")
    retry = command("retry", "re-run a step and its downstream (e.g. after fixing a failure)")
    retry.add_argument("step_name")
    purge = command("purge", "delete a tenant's finished tasks older than N days and/or artifact versions "
                             "past the newest K of each step (never a running or paused task)", task=False)
    purge.add_argument("--older-than", type=float, metavar="DAYS", help="finished more than DAYS days ago")
    purge.add_argument("--keep-versions", type=int, metavar="K", help="keep the newest K versions of each step")
    purge.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    purge.add_argument("--batch", type=int, default=20, help="tasks per transaction (default: %(default)s)")
    signal = command("signal", "deliver a decision to a step waiting for one (an approval)")
    signal.add_argument("step_name")
    signal.add_argument("--decision", help="the decision (one of the step's choices, e.g. approve)")
    signal.add_argument("--payload", default="{}", help="more of the signal, as a JSON object")
    signal.add_argument("--actor", default=os.environ.get("USER"), help="who decides (default: $USER)")
    return p


async def run(args):
    if args.command == "demo":
        from .demo import run_demo
        details = await run_demo(args.db, speed=0.01 if args.quick else 1.0, console=console,
                                 serve=(args.host, args.port) if args.serve else None)
        return {"tasks": len(details), "statuses": sorted({d["status"] for d in details})}
    if args.command == "create-schema":
        storage = Storage.from_description(args.db)
        try:
            return {"created_or_present": await storage.create_missing_tables(args.with_reference)}
        finally:
            await storage.close()
    require_existing(args.db)
    if args.command == "serve":
        return await serve_dashboard(args)
    if args.command == "load-codes":
        from .host.appcodes import load_codes
        return await load_codes(args.db)
    service = PipelineService(args.db, autostart=False, require_handlers=False)
    try:
        if args.command == "list":
            return await service.list(args.tenant, pipeline_id=args.pipeline, status=args.status,
                                      page=args.page, rows=args.rows)
        if args.command == "detail":
            return await service.detail(args.tenant, args.task_id)
        if args.command == "node":
            return await service.node(args.tenant, args.task_id, args.step_name, args.version)
        if args.command == "purge":
            return await service.purge(args.tenant, older_than=args.older_than, keep_versions=args.keep_versions,
                                       dry_run=args.dry_run, batch=args.batch)
        if args.command == "retry":
            return await service.modify(args.tenant, args.task_id, {}, rerun_from=args.step_name)
        if args.command == "signal":
            payload = dict(parse_json_object(args.payload, "--payload"))
            if args.decision is not None:
                payload["decision"] = args.decision
            return await service.signal(args.tenant, args.task_id, args.step_name, payload, actor=args.actor)
        if args.command == "submit":
            return await service.submit(args.tenant, args.pipeline_id, args.owner, args.title,
                                        json_argument(args.params, "--params"),
                                        idempotency_key=args.idempotency_key, priority=args.priority)
        if args.command == "schedule-create":
            return await service.schedule_create(
                args.tenant, args.pipeline_id, args.owner, cron=args.cron, every=args.every, at=args.at,
                params=json_argument(args.params, "--params"), title=args.title, timezone=args.timezone,
                overlap=args.overlap, catch_up=args.catch_up, priority=args.priority)
        if args.command == "schedule-list":
            return await service.schedule_list(args.tenant, page=args.page, rows=args.rows)
        if args.command.startswith("schedule-"):
            operation = getattr(service, args.command.replace("-", "_"))
            return await operation(args.tenant, args.schedule_id)
        return await getattr(service, args.command)(args.tenant, args.task_id)
    finally:
        await service.storage.close()


async def serve_dashboard(args):
    """``serve``: the dashboard over the default service, until Ctrl-C or SIGTERM. It only
    reads and controls tasks: the host processes run the steps."""
    from . import api
    from .web.app import address, start_dashboard, until_stopped
    from .web.viewers import Viewers
    if (args.tenant is None) == (args.users is None):
        raise InvalidInputError("serve needs exactly one of --tenant T (one tenant, a fresh token) "
                                "or --users FILE (tokens of several tenants)")
    if args.tenant is not None:
        viewers, token = Viewers.single(args.tenant, args.user)
    else:
        viewers, token = Viewers.from_file(args.users), None
    api.configure(args.db, autostart=False, require_handlers=False)
    try:
        runner, port = await start_dashboard(viewers, args.host, args.port)
    except OSError as exc:
        await api.shutdown()
        raise ConfigurationError(f"the dashboard cannot listen on {args.host}:{args.port}: {exc}") from None
    try:
        shown = address(args.host, port, token) if token else f"{address(args.host, port, '<your token>')} "\
            f"({len(viewers)} users in {args.users})"
        console.print(f"the dashboard: {shown}", highlight=False, soft_wrap=True)
        await until_stopped()
    finally:
        await runner.cleanup()
        await api.shutdown()
    return {"stopped": True}


def json_argument(text, what):
    """A command-line JSON object (None stays None: the API's default)."""
    if text is None:
        return None
    return dict(parse_json_object(text, what))


def require_existing(db):
    """Operator commands work on an existing database: opening a SQLite path creates the file,
    and a failed command (a typo in --db, the wrong directory) must not leave one behind."""
    description = parse_url(db)
    path = description["kwargs"].get("path")
    if description["driver"] == "sqlite" and not os.path.exists(path):
        raise SchemaMissingError(f"there is no SQLite database at {path!r}: create it with "
                                 f"`python -m pipeline_service create-schema --with-reference --db {db}`")


def show(command, result):
    if command == "list":
        table = Table(title=f"{result['total']} task(s)")
        table.add_column("id", no_wrap=True)
        for column in ("pipeline", "title", "status", "progress", "created", "schedule"):
            table.add_column(column)
        for r in result["rows"]:
            p = r["progress"]
            done = f"{p['succeeded']}/{p['total']}" + (f", {p['skipped']} skipped" if p.get("skipped") else "")
            table.add_row(r["id"], r["pipeline_id"], r["title"], r["status"], done, r["created_at"],
                          r.get("schedule_id") or "")
        console.print(table)
    elif command == "schedule-list":
        table = Table(title=f"{result['total']} schedule(s)")
        table.add_column("id", no_wrap=True)
        for column in ("pipeline", "when", "status", "next", "last runs"):
            table.add_column(column)
        for r in result["rows"]:
            when = r["cron"] or (f"every {r['every']}s" if r["every"] else f"at {r['at']}")
            runs = ", ".join(f"{x['scheduled_for']} {x['status']}" for x in r["runs"])
            table.add_row(r["id"], r["pipeline_id"], f"{when} ({r['timezone']})", r["status"],
                          r["next_fire_at"] or "-", runs)
        console.print(table)
    elif command == "purge":
        verb = "would delete" if result["dry_run"] else "deleted"
        console.print(f"tenant {result['tenant_id']}: {verb} {len(result['tasks'])} task(s), {result['steps']} "
                      f"step row(s), {result['artifacts']} artifact version(s)", highlight=False)
    elif command == "detail" or "steps" in result:
        console.print(f"[bold]{result['title']}[/bold] {result['id']}: {result['status']}"
                      + (f" — {result['error']}" if result.get("error") else ""))
        if "steps" in result:
            table = Table()
            for column in ("step", "type", "status", "attempt", "input v", "output v", "error"):
                table.add_column(column)
            for s in result["steps"]:
                table.add_row(s["step_name"], s["step_type"], s["status"], str(s["attempt"]),
                              str(s["input_version"] or "-"), str(s["output_version"] or "-"), s["error"] or "")
            console.print(table)
    else:
        console.print_json(json.dumps(result))


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except PipelineError as exc:
        console.print(f"[red]error[/red] ({exc.status}): {exc}", highlight=False)
        return 2 if exc.status == "not_found" else 1
    if args.json:  # strict JSON: nothing stored can hold NaN or Infinity (they are refused on input)
        print(json.dumps(result, ensure_ascii=False, allow_nan=False, indent=1))
    elif args.command not in ("demo", "serve"):
        show(args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
