"""Health, the OpenAPI document of the whole API, and Swagger UI."""
