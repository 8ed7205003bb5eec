"""A case-insensitive router of ARM paths; each route's name is how the call log counts it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]
_PLACEHOLDER = re.compile(r"\{(\w+)(\*?)\}")


@dataclass(frozen=True)
class Route:
    method: str
    name: str
    template: str
    handler: Handler
    pattern: re.Pattern[str]
    authenticated: bool


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, name: str, template: str, handler: Handler, authenticated: bool = True) -> None:
        regex, position = "^", 0
        for match in _PLACEHOLDER.finditer(template):
            regex += re.escape(template[position : match.start()])
            regex += f"(?P<{match.group(1)}>.+?)" if match.group(2) else f"(?P<{match.group(1)}>[^/]+)"
            position = match.end()
        regex += re.escape(template[position:]) + "/?$"
        self.routes.append(Route(method, name, template, handler, re.compile(regex, re.IGNORECASE), authenticated))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        allowed = False
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method == method:
                return route, match.groupdict()
            allowed = True
        if allowed:
            raise web.HTTPMethodNotAllowed(method, [])
        return None


def route(router: Router, method: str, name: str, template: str, authenticated: bool = True) -> Callable[[Any], Any]:
    def register(handler: Handler) -> Handler:
        router.add(method, name, template, handler, authenticated)
        return handler

    return register
