"""TEI's error body ``{"error", "error_type"}`` and the status code of each kind of error."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from ..errors import SparsebridgeError


class ApiError(SparsebridgeError):
    """An error answered to the client: an HTTP status, TEI's ``error_type`` and a one-line message."""

    status = 422
    error_type = "validation"

    def response(self) -> JSONResponse:
        """The error as the JSON response TEI's API gives."""
        return error_response(self.status, self.error_type, str(self))


class InvalidInput(ApiError):
    """The body is not what the route takes (a wrong type, an unknown key or prompt name): 422."""


class TooLarge(ApiError):
    """Too many texts, too many tokens or too many bytes for the configured limits: 413."""

    status = 413


class EmptyInput(ApiError):
    """``inputs`` holds no text: 400, TEI's ``empty`` error."""

    status = 400
    error_type = "empty"


class Overloaded(ApiError):
    """The queue is full: 429, so that the client backs off and retries."""

    status = 429
    error_type = "overloaded"


class Unauthorized(ApiError):
    """A missing or wrong bearer API key: 401."""

    status = 401
    error_type = "unauthorized"


class NotServed(ApiError):
    """A route for a model this server does not hold (``/embed`` without a dense model): 404."""

    status = 404


class InferenceFailed(ApiError):
    """The model pass failed: 424, TEI's ``backend`` error (the cause is logged, not sent)."""

    status = 424
    error_type = "backend"


class Unhealthy(ApiError):
    """The model worker is not running: 503."""

    status = 503
    error_type = "unhealthy"


def error_response(status: int, error_type: str, message: str) -> JSONResponse:
    """TEI's error body; ``message`` is one line, never a traceback."""
    return JSONResponse({"error": " ".join(message.split()), "error_type": error_type}, status_code=status)
