"""One error shape for every failure (`schemas.ErrorBody`), and the handlers that make bad input a 4xx, never a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from service.api.schemas import ErrorBody, FieldError

logger = logging.getLogger(__name__)
_UNPARSABLE = "There was an error parsing the body"  # FastAPI's 400 for bodies it cannot even decode


class ApiError(Exception):
    """An HTTP error with the service's body: `detail`, optional field errors and the limit that was hit."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        limit: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = ErrorBody(detail=detail, errors=errors, limit=limit)
        self.headers = headers


def _field(loc: tuple | list) -> str:
    return ".".join(str(part) for part in loc)


def _reason(error: dict) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def _field_error(error: dict) -> FieldError:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":  # FastAPI puts the character offset where a field name belongs
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        problem = (error.get("ctx") or {}).get("error", "cannot be decoded")
        return FieldError(field="body", reason=f"not valid JSON{at}: {problem}")
    return FieldError(field=_field(loc), reason=_reason(error))


def _unparsable_reason(cause: BaseException | None) -> str:
    if isinstance(cause, RecursionError):
        return "JSON nested too deeply (the limit is about 1000 levels)"
    if isinstance(cause, UnicodeDecodeError):
        return "not UTF-8 text"
    return "not a JSON document in UTF-8"


def _allowed_methods(request: Request) -> list[str]:
    """Every method some operation of the OpenAPI document serves at this path (the document lists them all)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(request.url.path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body.model_dump(exclude_none=True), error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in error.errors()]
        summary = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5])
        body = ErrorBody(detail=f"invalid request: {summary}", errors=errors)
        return JSONResponse(body.model_dump(exclude_none=True), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == _UNPARSABLE:  # e.g. a body that is not UTF-8
            reason = _unparsable_reason(error.__cause__)
            field_error = FieldError(field="body", reason=reason)
            body = ErrorBody(detail=f"invalid request: body: {reason}", errors=[field_error])
            return JSONResponse(body.model_dump(exclude_none=True), 422)
        if error.status_code == 405:  # Starlette's Allow header names only the first matching route's methods
            allowed = _allowed_methods(request) or [(error.headers or {}).get("Allow", "GET")]
            detail = f"method {request.method} not allowed here; allowed: {', '.join(allowed)}"
            return JSONResponse(ErrorBody(detail=detail).model_dump(exclude_none=True), 405,
                                headers={"Allow": ", ".join(allowed)})  # fmt: skip
        return JSONResponse(
            ErrorBody(detail=str(error.detail)).model_dump(exclude_none=True),
            error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(ErrorBody(detail=f"internal error: {type(error).__name__}").model_dump(), 500)
