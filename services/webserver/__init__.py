"""The webserver: Kestra's REST API (``/api/v1``) over the backend, with live follows
over Server-Sent Events; ``create_app`` builds the ASGI app, ``Webserver`` serves it
as a component of the server."""

from services.webserver.app import create_app

__all__ = ["create_app"]
