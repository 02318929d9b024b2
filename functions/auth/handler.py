"""Lambda entry point of the auth function."""

from functions.auth.routes import router
from functions.http import make_lambda_handler, make_resolver

app = make_resolver()
app.include_router(router)
lambda_handler = make_lambda_handler(app)
