"""The dashboard's HTTP side: the page (static/), its JSON API, and the server's start.

The API is the module's own scripts' form (host/endpoints.py, ``for_api=True``): the same
operations, parameters, validation and error answers as ``/pipeline_service/api/<op>.dspy``,
over the default service (api.py) — the one a host's endpoints use, so the page works the
same whether ``serve`` runs it or a host mounts ``make_app()``. Only the user differs: a
token (viewers.py) instead of a login session.

    GET  /                       the page        GET  /api/labels   status labels, UI words
    GET  /static/<file>          its JS and CSS  GET  /api/whoami   the token's tenant and user
    GET  /api/list|detail|node   reads           POST /api/pause|resume|cancel|modify|submit
"""
import asyncio
import signal
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from ..host.endpoints import OPERATIONS, error_answer, json_answer, pipeline_endpoint
from .labels import page_labels
from .viewers import Viewer, Viewers

VIEWERS: web.AppKey[Viewers] = web.AppKey("viewers", Viewers)
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# the page runs only its own files: no inline script, no other origin, never inside a frame
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
NO_TOKEN = ("open the address the dashboard printed when it started: it carries your token "
            "(serve --tenant T prints it; with --users FILE, your token is in that file)")


def static_text(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@web.middleware
async def security_headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


async def page(request: web.Request) -> web.Response:
    return web.Response(text=static_text("index.html"), content_type="text/html", charset="utf-8")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:  # a fixed list: no path from a request ever reaches the file system
        raise web.HTTPNotFound()
    return web.Response(text=static_text(name), content_type=STATIC_FILES[name], charset="utf-8")


async def labels(request: web.Request) -> web.Response:
    return json_answer({"status": "ok", "data": page_labels()})


def viewer_of(request: web.Request) -> Viewer | None:
    return request.app[VIEWERS].find(bearer(request))


async def whoami(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    if viewer is None:
        return error_answer(True, "not_logged_in", NO_TOKEN)
    return json_answer({"status": "ok", "data": {"tenant_id": viewer.tenant_id, "user_id": viewer.user_id}})


async def operation(request: web.Request) -> web.Response:
    name = request.match_info["op"]
    if name not in OPERATIONS:
        return error_answer(True, "not_found", f"there is no operation {name!r}; there are: {', '.join(OPERATIONS)}")
    viewer = viewer_of(request)
    if viewer is None:
        return error_answer(True, "not_logged_in", NO_TOKEN)
    # a change comes as a form (the same parameters as the .dspy endpoints); a read as a query
    params = dict(await request.post()) if request.method == "POST" else dict(request.query)

    async def user() -> str:
        return viewer.user_id

    async def tenant() -> str:
        return viewer.tenant_id
    return await pipeline_endpoint(name, request, params, user, tenant, for_api=True)


def make_app(viewers: Viewers) -> web.Application:
    """The dashboard as an aiohttp application (a host may mount it with ``add_subapp``)."""
    if not isinstance(viewers, Viewers):
        raise TypeError(f"make_app needs the dashboard's Viewers, got {type(viewers).__name__}")
    app = web.Application(middlewares=[security_headers], client_max_size=2 * 1024 * 1024)
    app[VIEWERS] = viewers
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/api/labels", labels)
    app.router.add_get("/api/whoami", whoami)
    app.router.add_route("*", "/api/{op}", operation)
    return app


async def start_dashboard(viewers: Viewers, host: str = "127.0.0.1", port: int = 8080) -> tuple[web.AppRunner, int]:
    """Serve the dashboard on ``host:port`` (0: a free port); returns the runner and the port."""
    runner = web.AppRunner(make_app(viewers), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def address(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/#token={token}"


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (a service manager's stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
