"""The ``http`` step type: one HTTP request with aiohttp (docs/STEP_TYPES.md, "http").

The host option ``http_allow`` (host patterns) restricts the hosts a URL may reach, so
tenant params templated into a URL cannot turn a step into a probe of the internal
network; redirects are not followed (a redirect could lead anywhere).
"""
import fnmatch
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..exceptions import InvalidInputError

DEFAULT_TIMEOUT = 60.0          # seconds, when the step's config sets no timeout
MAX_BODY = 4 * 1024 * 1024      # bytes of a response body read at most (an output is 4 MiB at most)
ERROR_BODY = 500                # characters of the body in the error of an unexpected status
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
KEYS = {"method", "url", "headers", "json", "body", "timeout", "expect_status", "retries", "retry_delay", "when"}


class RequestFailed(Exception):
    """The request got no answer, or an answer with a status the step does not expect."""


def allowed(url_host: str, port: int | None, patterns: tuple[str, ...] | None) -> bool:
    """Whether a host (and port) matches one of ``patterns`` ("api.example.com", "*.example.org",
    "127.0.0.1:8080"); None: every host is allowed."""
    if patterns is None:
        return True
    host = url_host.lower().rstrip(".")
    for pattern in patterns:
        name, _, wanted_port = pattern.rpartition(":") if pattern.count(":") == 1 else (pattern, "", "")
        if fnmatch.fnmatchcase(host, name) and (not wanted_port or wanted_port == str(port)):
            return True
    return False


def _expected(config: dict[str, Any]):
    expect = config.get("expect_status", "2xx")
    if isinstance(expect, int) and not isinstance(expect, bool):
        return [expect], str(expect)
    if isinstance(expect, list) and expect and all(isinstance(c, int) and not isinstance(c, bool) for c in expect):
        return expect, str(expect)
    if isinstance(expect, str) and len(expect) == 3 and expect[0] in "12345" and expect[1:].lower() == "xx":
        low = int(expect[0]) * 100
        return range(low, low + 100), expect
    raise InvalidInputError(f"config.expect_status must be a status code, a list of them or a class like '2xx', "
                            f"got {expect!r}")


def _request(config: dict[str, Any], patterns):
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise InvalidInputError(f"an http step's config has unknown keys {', '.join(unknown)}: the keys are "
                                f"{', '.join(sorted(KEYS))}")
    method = config.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise InvalidInputError(f"config.method must be one of {', '.join(METHODS)}, got {method!r}")
    url = config.get("url")
    if not isinstance(url, str):
        raise InvalidInputError("config.url must be an http:// or https:// URL")
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInputError(f"config.url has an invalid port: {url[:200]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"config.url must be an http:// or https:// URL with a host, got {url[:200]!r}")
    if not allowed(parts.hostname, port, patterns):
        raise InvalidInputError(f"config.url reaches host {parts.hostname}:{port}, which this host's http_allow "
                                "does not list")
    headers = config.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InvalidInputError("config.headers must be an object of header names and string values")
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0"):  # a value from params must not start another header
            raise InvalidInputError(f"config.headers {name[:60]!r} holds a line break or NUL")
    if "json" in config and "body" in config:
        raise InvalidInputError("config has both json and body: a request has one body")
    body = config.get("body")
    if body is not None and not isinstance(body, str):
        raise InvalidInputError("config.body must be a string (use json for an object)")
    kwargs: dict[str, Any] = {"headers": headers}
    if "json" in config:
        kwargs["json"] = config["json"]
    elif body is not None:
        kwargs["data"] = body.encode("utf-8")
    return method.upper(), url, kwargs


async def run(patterns: tuple[str, ...] | None, tenant_id: str, task_id: str, step_name: str,
              input_data: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Send the step's request; its output ``{status_code, headers, body}``."""
    method, url, kwargs = _request(config, patterns)
    expected, shown = _expected(config)
    timeout = config.get("timeout") or DEFAULT_TIMEOUT
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.request(method, url, allow_redirects=False, **kwargs) as response:
                raw = await response.content.read(MAX_BODY + 1)
                status, headers = response.status, {k: v for k, v in response.headers.items()}
                content_type = response.content_type
                charset = response.charset or "utf-8"
    except TimeoutError:
        raise RequestFailed(f"{method} {url}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise RequestFailed(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    if len(raw) > MAX_BODY:
        raise RequestFailed(f"{method} {url}: the response body is larger than {MAX_BODY} bytes")
    text = raw.decode(charset, "replace")
    body: Any = text
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError:
            body = text  # it says JSON but is not: kept as text
    if status not in expected:
        raise RequestFailed(f"{method} {url} answered {status} (expected {shown}): {text[:ERROR_BODY]!r}")
    return {"status_code": status, "headers": headers, "body": body}
