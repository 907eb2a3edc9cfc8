"""OpenAI-style API errors: one exception type carrying status, message, type, code and parameter.

The body is always ``{"error": {"message", "type", "param", "code"}}`` (the OpenAI error format), so
OpenAI client libraries raise their usual ``APIStatusError`` subclasses with our message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class APIError(Exception):
    """A request the server refuses or cannot serve.

    Args:
        status: HTTP status code.
        message: one line for the user.
        type: OpenAI error type (``invalid_request_error``, ``authentication_error``, ``server_error`` ...).
        code: machine-readable reason (``voice_not_found``, ``model_not_loaded`` ...).
        param: the request field at fault, if any.
    """

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """400: a field has a bad value."""
    return APIError(400, message, "invalid_request_error", code, param)


def too_large(message: str, param: str | None = None, code: str = "file_too_large") -> APIError:
    """413: an upload or body over its size limit."""
    return APIError(413, message, "invalid_request_error", code, param)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> APIError:
    """404: an unknown resource (voice, route)."""
    return APIError(404, message, "invalid_request_error", code, param)


def model_not_loaded(what: str) -> APIError:
    """503: the model an endpoint needs is not loaded in this server."""
    return APIError(503, f"{what} is not loaded in this server; start `mgm-omni serve` with --mllm "
                    "pointing to an MGM-Omni MLLM checkpoint to enable it", "server_error", "model_not_loaded")


def queue_full(limit: int) -> APIError:
    """429: the speech queue holds ``limit`` waiting requests already."""
    return APIError(429, f"the server is busy: {limit} requests are already waiting; retry shortly",
                    "rate_limit_error", "queue_full", headers={"Retry-After": "1"})
