"""A task's DAG as an SVG picture, drawn on the server for the bricks task page (``dag.dspy``).

The same drawing as the dashboard's (web/static/dashboard.js): a column per depth (one past
the deepest dependency), the steps of a column in the task's order, an arrow per
``depends_on``. Each node is ``<g class="node step-<status>">`` with its colour given in
the picture itself (a host's page has no stylesheet of ours); a status without a colour
here is drawn grey. Every text from the task is escaped: a step name never becomes markup.
"""
from html import escape
from typing import Any

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 170, 52, 70, 22, 16
# status -> (stroke, fill); a new status needs a line here and a label in init/data.json
COLOURS = {"pending": ("#9aa5b1", "#f5f7fa"), "running": ("#2680c2", "#e6f6ff"), "paused": ("#de911d", "#fffbea"),
           "succeeded": ("#3f9142", "#e3f9e5"), "failed": ("#d64545", "#ffeeee"),
           "cancelled": ("#52606d", "#e4e7eb"), "skipped": ("#b8b2a7", "#faf9f7"), "waiting": ("#8662c7", "#f2ebfe")}
OTHER = ("#7b8794", "#ffffff")


def css_name(status: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in status)


def layout(steps: list[dict[str, Any]]) -> tuple[dict[str, tuple[float, float]], int, int]:
    depth: dict[str, int] = {}
    columns: list[list[str]] = []
    for step in steps:  # a task's steps come in topological order
        name = step["step_name"]
        depth[name] = 1 + max((depth.get(d, 0) for d in step["depends_on"]), default=-1)
        while len(columns) <= depth[name]:
            columns.append([])
        columns[depth[name]].append(name)
    tallest = max((len(c) for c in columns), default=1)
    place: dict[str, tuple[float, float]] = {}
    for col, names in enumerate(columns):
        offset = (tallest - len(names)) * (NODE_H + GAP_Y) / 2
        for row, name in enumerate(names):
            place[name] = (MARGIN + col * (NODE_W + GAP_X), MARGIN + offset + row * (NODE_H + GAP_Y))
    width = 2 * MARGIN + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    height = 2 * MARGIN + tallest * NODE_H + (tallest - 1) * GAP_Y
    return place, width, height


def dag_svg(detail: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """The SVG of a task's detail (``service.detail``); ``labels``: status -> the text shown."""
    labels = labels or {}
    steps = detail["steps"]
    place, width, height = layout(steps)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(detail.get("title") or detail["id"])}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#9aa5b1"/></marker></defs>']
    for step in steps:
        for dep in step["depends_on"]:
            (ax, ay), (bx, by) = place[dep], place[step["step_name"]]
            x1, y1, x2, y2 = ax + NODE_W, ay + NODE_H / 2, bx, by + NODE_H / 2
            mid = (x1 + x2) / 2
            parts.append(f'<path class="edge" data-from="{escape(dep)}" data-to="{escape(step["step_name"])}" '
                         f'd="M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}" fill="none" stroke="#9aa5b1" '
                         f'stroke-width="1.6" marker-end="url(#arrow)"/>')
    for step in steps:
        x, y = place[step["step_name"]]
        status = str(step["status"])
        stroke, fill = COLOURS.get(status, OTHER)
        name = step["step_name"]
        shown = name if len(name) <= 20 else name[:19] + "…"
        tip = f"{name}: {step['error']}" if step.get("error") else name
        version = step.get("output_version") or "-"
        parts.append(
            f'<g class="node step-{css_name(status)}" data-step="{escape(name)}" data-status="{escape(status)}" '
            f'transform="translate({x} {y})"><title>{escape(tip)}</title>'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="2"/>'
            f'<text x="10" y="20" font-size="13" fill="#1f2933">{escape(shown)}</text>'
            f'<text x="10" y="40" font-size="11" fill="#616e7c">{escape(labels.get(status, status))} · v{version}</text>'
            f'</g>')
    parts.append("</svg>")
    return "".join(parts)
