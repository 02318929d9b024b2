"""Lambda entry point of the pipelines function."""

from functions.http import make_lambda_handler, make_resolver
from functions.pipelines.routes import router

app = make_resolver()
app.include_router(router)
lambda_handler = make_lambda_handler(app)
