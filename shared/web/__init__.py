"""The HTTP side of the platform, by concern: app assembly (app.py), how a route is
declared (handlers.py), what a route can ask for (dependencies.py), the routes every
service has (routes.py), problem+json and its audit (problems.py), and the correlation
id (correlation.py)."""

from shared.web.app import build_app
from shared.web.dependencies import service_client

__all__ = ["build_app", "service_client"]
