"""A realistic production line, run for several tenants at once, with live progress.

    outline -> (draft_intro, draft_body, draft_conclusion) -> merge -> review

Handlers take visible time (``config.work`` seconds, scaled by ``speed``). After
the line has run, a person edits one task's outline and the engine re-runs
exactly what depends on it; a table then shows every task with its versions.

With ``serve`` (``demo --serve``) the dashboard (web/) comes up first, one address per
tenant, and stays up after the line has run, until Ctrl-C.
"""
import asyncio
import random
import secrets
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import api
from .status import TERMINAL_TASK_STATUSES
from .web.app import address, start_dashboard, until_stopped
from .web.viewers import Viewer, Viewers

PIPELINE_ID = "demo-article"
PRODUCTION_LINE = [
    {"step_name": "outline", "step_type": "demo.outline", "config": {"work": 1.0}},
    {"step_name": "draft_intro", "step_type": "demo.draft", "depends_on": ["outline"],
     "config": {"work": 1.5, "section": "introduction"}},
    {"step_name": "draft_body", "step_type": "demo.draft", "depends_on": ["outline"],
     "config": {"work": 2.5, "section": "body", "retries": 1}},
    {"step_name": "draft_conclusion", "step_type": "demo.draft", "depends_on": ["outline"],
     "config": {"work": 1.2, "section": "conclusion"}},
    {"step_name": "merge", "step_type": "demo.merge", "depends_on": ["draft_intro", "draft_body", "draft_conclusion"],
     "config": {"work": 0.8}},
    {"step_name": "review", "step_type": "demo.review", "depends_on": ["merge"], "config": {"work": 1.0}},
]
TENANTS = {"acme": ["tea", "kites"], "globex": ["volcanoes", "tides"], "initech": ["staplers", "printers"]}


def register_demo_handlers(speed=1.0, service=None):
    """Register the line's handlers with ``service``, else with the default service (a host's);
    ``speed`` scales their working time (0.01 for tests)."""
    register = api.register_handler if service is None else service.register_handler

    async def work(config):
        await asyncio.sleep(float(config.get("work", 1.0)) * speed * random.uniform(0.7, 1.3))

    async def outline(tenant_id, task_id, step_name, input_data, config):
        await work(config)
        topic = input_data["params"].get("topic", "something")
        return {"topic": topic, "points": [f"what {topic} is", f"why {topic} matters", f"{topic} tomorrow"]}

    async def draft(tenant_id, task_id, step_name, input_data, config):
        await work(config)
        plan = input_data["upstream"]["outline"]
        return {"section": config["section"], "text": f"{config['section'].title()} on {plan['topic']}: "
                + "; ".join(plan["points"]) + "."}

    async def merge(tenant_id, task_id, step_name, input_data, config):
        await work(config)
        parts = [input_data["upstream"][name]["text"]
                 for name in ("draft_intro", "draft_body", "draft_conclusion")]
        return {"article": "\n\n".join(parts), "words": sum(len(p.split()) for p in parts)}

    def review(tenant_id, task_id, step_name, input_data, config):  # a plain function: runs in a thread
        time.sleep(float(config.get("work", 1.0)) * speed)
        article = input_data["upstream"]["merge"]
        return {"verdict": "approved" if article["words"] > 10 else "too short", "words": article["words"]}

    register("demo.outline", outline)
    register("demo.draft", draft)
    register("demo.merge", merge)
    register("demo.review", review)


async def follow(service, console, tasks, title):
    """Live progress bars, one per task, until every task has finished."""
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]:<10}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        console.print(f"[bold]{title}[/bold]")
        bars = {t["id"]: progress.add_task(f"{t['tenant_id']:8} {t['title']}", total=t["progress"]["total"],
                                           status=t["status"]) for t in tasks}
        while True:
            details = [await service.detail(t["tenant_id"], t["id"]) for t in tasks]
            for d in details:
                progress.update(bars[d["id"]], completed=d["progress"]["succeeded"], status=d["status"])
            if all(d["status"] in TERMINAL_TASK_STATUSES for d in details):
                return details
            await asyncio.sleep(0.1)


async def summary_table(service, tasks):
    table = Table(title="pipeline_service demo: every task, with its artifact versions")
    for column in ("tenant", "task", "status", "steps", "outline", "review", "verdict"):
        table.add_column(column)
    for t in tasks:
        d = await service.detail(t["tenant_id"], t["id"])
        outline = await service.node(t["tenant_id"], t["id"], "outline")
        review = await service.node(t["tenant_id"], t["id"], "review")
        sources = {v["version"]: v["source"] for v in outline["versions"] if v["kind"] == "output"}
        table.add_row(t["tenant_id"], d["title"], d["status"],
                      f"{d['progress']['succeeded']}/{d['progress']['total']}",
                      f"v{outline['version']} ({sources.get(outline['version'])})",
                      f"v{review['version']}", (review["output"] or {}).get("verdict", "-"))
    return table


async def run_demo(database="sqlite:///pipeline_service.db", speed=1.0, console=None, serve=None):
    """Run the whole demo; returns the final details of every task. ``serve``: ``(host, port)``
    of the dashboard to show it on, kept up after the line has run until Ctrl-C or SIGTERM."""
    console = console or Console()
    # the default service: the one the dashboard's operations (host/endpoints.py) use
    service = api.configure(database, concurrency=32)
    register_demo_handlers(speed)
    runner = None
    try:
        if serve is not None:
            runner = await show_dashboard(console, *serve)
        await service.storage.create_missing_tables(include_reference=True)
        await service.define_pipeline(PIPELINE_ID, PRODUCTION_LINE, name="article production line",
                                      description="outline, three drafts in parallel, merge, review")
        console.print(f"database: {service.storage.describe()}")
        tasks = [await service.submit(tenant, PIPELINE_ID, f"{tenant}-editor", f"an article on {topic}",
                                      {"topic": topic})
                 for tenant, topics in TENANTS.items() for topic in topics]
        await follow(service, console, tasks, f"{len(tasks)} tasks for {len(TENANTS)} tenants, running at once")
        edited = tasks[0]
        new_outline = {"topic": "green tea", "points": ["how green tea is made", "green tea and health",
                                                        "brewing it well"]}
        result = await service.modify(edited["tenant_id"], edited["id"], {"outline": {"output": new_outline}})
        console.print(f"\n[bold]a person edits the outline of {edited['tenant_id']}'s '{edited['title']}'[/bold]: "
                      f"re-running {', '.join(result['rerun'])}")
        await follow(service, console, [edited], "cascade re-run")
        console.print(await summary_table(service, tasks))
        details = [await service.detail(t["tenant_id"], t["id"]) for t in tasks]
        if runner is not None:
            console.print("[bold]the dashboard stays up: Ctrl-C to stop[/bold]")
            await until_stopped()
        return details
    finally:
        if runner is not None:
            await runner.cleanup()
        await api.shutdown()


async def show_dashboard(console, host, port):
    """Start the dashboard with one user per demo tenant and print their addresses."""
    tokens = {secrets.token_urlsafe(24): Viewer(tenant, f"{tenant}-editor") for tenant in TENANTS}
    runner, port = await start_dashboard(Viewers(tokens), host, port)
    console.print("[bold]the dashboard[/bold] (one address per tenant; each sees its own tasks only):")
    for token, viewer in tokens.items():
        console.print(f"  {viewer.tenant_id:8} {address(host, port, token)}", highlight=False, soft_wrap=True)
    return runner
