"""A case-insensitive router of ARM paths; each route's name is how the call log counts it.

Route handlers are plain functions of one `Call` (http.py). The application (app.py) reads the request,
draws faults, then runs the handler under the state's lock: no handler takes the lock itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from amlwire_sandbox.http import Call, json_response

Handler = Callable[["Call"], web.StreamResponse]
_PLACEHOLDER = re.compile(r"\{(\w+)(\*?)\}")


@dataclass(frozen=True)
class Route:
    method: str
    name: str
    template: str
    handler: Handler
    pattern: re.Pattern[str]
    authenticated: bool
    action: str | None  # the ARM action the caller needs on the addressed resource (None: not authorised by ARM)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        method: str,
        name: str,
        template: str,
        handler: Handler,
        authenticated: bool = True,
        action: str | None = None,
    ) -> None:
        regex, position = "^", 0
        for match in _PLACEHOLDER.finditer(template):
            regex += re.escape(template[position : match.start()])
            regex += f"(?P<{match.group(1)}>.+?)" if match.group(2) else f"(?P<{match.group(1)}>[^/]+)"
            position = match.end()
        regex += re.escape(template[position:]) + "/?$"
        pattern = re.compile(regex, re.IGNORECASE)
        self.routes.append(Route(method, name, template, handler, pattern, authenticated, action))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        # rule: arm.any-api-version (the path alone routes; the query's api-version is never read)
        allowed = False
        for candidate in self.routes:
            match = candidate.pattern.match(path)
            if match is None:
                continue
            if candidate.method == method:
                return candidate, match.groupdict()
            allowed = True
        if allowed:
            raise web.HTTPMethodNotAllowed(method, [])
        return None


ROUTER = Router()


def serve(name: str, template: str, type_: str, action: str) -> None:
    """Register the GET of one resource type: its stored body, or ARM's 404."""

    def get(call: Call) -> web.StreamResponse:
        return json_response(call.state.require(call.id(template), type_).body)

    get.__name__ = f"get_{name.replace('.', '_')}"
    ROUTER.add("GET", name, template, get, action=action)


def route(
    method: str, name: str, template: str, action: str | None = None, authenticated: bool = True
) -> Callable[[Handler], Handler]:
    """Register a handler on the sandbox's router: `@route("GET", "msi.identity", MSI, action=...)`."""

    def register(handler: Handler) -> Handler:
        ROUTER.add(method, name, template, handler, authenticated, action)
        return handler

    return register
