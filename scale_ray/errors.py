"""API errors: ``{"error": {"code", "message", "details"}}`` with the right 4xx status."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the client caused (or can act on); rendered as JSON by the gateway."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        if request_id:
            error["request_id"] = request_id
        return {"error": error}


def bad_request(message: str, details: Any = None, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message, details)


def unprocessable(message: str, details: Any = None) -> ApiError:
    return ApiError(422, "validation_failed", message, details)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)
