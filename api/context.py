"""The API's dependencies, built once by ``create_app`` and reached from views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from api.auth import Authenticator
from shared.bus import EventBus
from shared.routing import Router
from shared.settings import Settings
from shared.store import Store


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Store
    bus: EventBus
    router: Router
    auth: Authenticator
    enqueue: Callable[[str], None]


def deps() -> Deps:
    found: Deps = current_app.extensions["resq"]
    return found
