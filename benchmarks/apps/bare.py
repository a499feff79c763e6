"""The framework's ceiling: a bare FastAPI route that reads the body and returns a constant ``Response``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

BODY = b'{"prediction":"virginica"}'
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    """Read the body and answer a constant JSON: what FastAPI and Starlette cost, with nothing of ours."""
    await request.body()
    return Response(BODY, media_type="application/json")
