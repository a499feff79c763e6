"""The HTTP layer: FastAPI app, routes, schemas, middleware."""
