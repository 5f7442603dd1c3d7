"""The dashboard: the grid on a world map, live, served by the gateway itself at /dashboard.

`dashboard_routes(gateway)` returns the routes to mount; the page and its vendored assets live in static/.
"""

from aigrid.dashboard.routes import dashboard_routes

__all__ = ["dashboard_routes"]
