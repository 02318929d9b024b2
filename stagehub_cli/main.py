"""`stagehub`: the command line for the stagehub API (register, pipelines, uploads, runs with a progress bar, results).

Global options go before the command: `stagehub --api URL --json pipelines list`. Errors are one line on stderr
(`error: CODE (status): message`) with an exit code per kind (see `ExitCode`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from stagehub_cli.client import (
    DEFAULT_WAIT_WINDOW_S,
    FINAL_STATUSES,
    MAX_WAIT_S,
    ApiError,
    ApiUnreachable,
    StagehubClient,
)
from stagehub_cli.text import json_text, plain, shown
from stagehub_cli.tokens import FileTokenStore, TokenStore

DEFAULT_API = "http://127.0.0.1:8000"
APP_NAME = "stagehub"

ClientFactory = Callable[[str, TokenStore], StagehubClient]


class WebhookEvent(StrEnum):
    """`--webhook-event`: the events API.md's `webhookEvents` takes."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"


class ExitCode(IntEnum):
    OK = 0
    API_ERROR = 1  # any other API error (409, 422, 429, 5xx ...)
    USAGE = 2  # bad command line (typer's own code for usage errors)
    AUTH = 3  # 401 / 403: not logged in, session expired, not allowed
    NOT_FOUND = 4  # 404
    EXECUTION_FAILED = 5  # --wait ended FAILED or CANCELLED
    UNREACHABLE = 6  # the server could not be reached
    INTERRUPTED = 130  # Ctrl-C while waiting (the execution keeps running)


def default_client_factory(api_url: str, token_store: TokenStore) -> StagehubClient:
    return StagehubClient(api_url, token_store=token_store)


@dataclass
class CliState:
    """What every command needs: where the API is, how to answer, and a client made on first use."""

    api_url: str
    json_output: bool
    token_store: TokenStore
    client_factory: ClientFactory
    _client: StagehubClient | None = field(default=None, repr=False)

    @property
    def client(self) -> StagehubClient:
        if self._client is None:
            self._client = self.client_factory(self.api_url, self.token_store)
        return self._client

    @property
    def out(self) -> Console:
        console = Console(soft_wrap=True)
        if not console.is_terminal:
            console.width = 200  # piped output: don't squeeze tables (and ids) into 80 columns
        return console

    @property
    def err(self) -> Console:
        return Console(stderr=True, soft_wrap=True)

    def emit(self, data: Any, render: Callable[[Console], None]) -> None:
        """JSON on stdout with --json, else the human rendering."""
        if self.json_output:
            typer.echo(json_text(data))
        else:
            render(self.out)


def usage_error(message: str, option: str) -> typer.Exit:
    """A bad command-line value: one stderr line and the usage exit code (raise what this returns)."""
    typer.echo(plain(f"error: {option}: {message}"), err=True)
    return typer.Exit(ExitCode.USAGE)


def exit_code_for(error: ApiError) -> ExitCode:
    if error.status in (401, 403):
        return ExitCode.AUTH
    if error.status == 404:
        return ExitCode.NOT_FOUND
    return ExitCode.API_ERROR


def describe_error(error: ApiError) -> str:
    line = f"error: {error.code} ({error.status}): {error.message}"
    if error.details:
        line += " [" + "; ".join(_detail(detail) for detail in error.details[:5]) + "]"
    if error.status == 401:
        line += " (run `stagehub login`)"
    return plain(line)


def _detail(detail: Any) -> str:
    if isinstance(detail, dict):
        where = ".".join(str(part) for part in detail.get("loc") or [])
        message = detail.get("message") or detail.get("msg") or json.dumps(detail)
        return f"{where}: {message}" if where else str(message)
    return str(detail)


class ApiErrorsGroup(TyperGroup):
    """The root group: turns the client's errors into one stderr line and an exit code, for every command."""

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        try:
            return super().invoke(ctx)
        except ApiError as error:
            typer.echo(describe_error(error), err=True)
            raise typer.Exit(exit_code_for(error)) from None
        except ApiUnreachable as error:
            typer.echo(plain(f"error: cannot reach the API: {error}"), err=True)
            raise typer.Exit(ExitCode.UNREACHABLE) from None


app = typer.Typer(
    cls=ApiErrorsGroup, no_args_is_help=True, add_completion=False, help="Pipelines of neural-network stages."
)
pipelines_app = typer.Typer(no_args_is_help=True, help="Create, list, show, rate and delete pipelines.")
executions_app = typer.Typer(no_args_is_help=True, help="List, show, wait for, cancel and delete executions.")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(executions_app, name="executions")


@app.callback()
def root(
    ctx: typer.Context,
    api: Annotated[str, typer.Option("--api", envvar="STAGEHUB_API", help="The API's base URL.")] = DEFAULT_API,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
    config_dir: Annotated[
        Path | None,
        typer.Option(envvar="STAGEHUB_CONFIG_DIR", help="Where tokens are kept (default: the user's config dir)."),
    ] = None,
) -> None:
    # Tests pass a client factory as the context's obj (CliRunner.invoke(app, args, obj=factory)).
    factory = ctx.obj if callable(ctx.obj) else default_client_factory
    directory = config_dir or Path(typer.get_app_dir(APP_NAME))
    ctx.obj = CliState(api.rstrip("/"), json_output, FileTokenStore(directory, api), factory)


def _state(ctx: typer.Context) -> CliState:
    state = ctx.find_object(CliState)
    assert state is not None  # the root callback always sets it
    return state


# ---- auth -----------------------------------------------------------------------------------------------

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]


def _read_password(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=confirm))


@app.command()
def register(
    ctx: typer.Context,
    email: Annotated[str, typer.Option(prompt=True)],
    display_name: Annotated[str | None, typer.Option(help="Default: the email's local part.")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create an account (then `stagehub login`)."""
    state = _state(ctx)
    user = state.client.register(email, _read_password(password_stdin, confirm=True), display_name)
    summary = shown(f"Registered {user['email']} ({user['displayName']}), user {user['userId']}")
    state.emit(user, lambda out: out.print(summary, highlight=False))


@app.command()
def login(
    ctx: typer.Context,
    email: Annotated[str, typer.Option(prompt=True)],
    password_stdin: PasswordStdin = False,
) -> None:
    """Log in; the tokens are kept for this API URL and refreshed automatically."""
    state = _state(ctx)
    state.client.login(email, _read_password(password_stdin, confirm=False))
    state.emit(
        {"email": email.strip().lower(), "api": state.api_url},
        lambda out: out.print(shown(f"Logged in to {state.api_url} as {email.strip().lower()}")),
    )


@app.command()
def logout(ctx: typer.Context) -> None:
    """Revoke this session's refresh token and forget the tokens."""
    state = _state(ctx)
    state.client.logout()
    state.emit({"loggedOut": True}, lambda out: out.print(shown(f"Logged out of {state.api_url}")))


@app.command()
def whoami(ctx: typer.Context) -> None:
    """The logged-in user."""
    state = _state(ctx)
    user = state.client.me()
    state.emit(user, lambda out: out.print(shown(f"{user['email']} ({user['displayName']}), user {user['userId']}")))


@app.command("stage-types")
def stage_types(ctx: typer.Context) -> None:
    """Stage types with their parameters, defaults and limits."""
    state = _state(ctx)
    types = state.client.stage_types()

    def render(out: Console) -> None:
        table = Table("type", "output", "parameters", "description")
        for item in types:
            table.add_row(
                shown(item["type"]),
                shown(item.get("output", "")),
                shown(_parameters_summary(item), multiline=True),
                shown(item.get("description", ""), multiline=True),
            )
        out.print(table)

    state.emit(types, render)


def _parameters_summary(stage_type: dict[str, Any]) -> str:
    properties = (stage_type.get("parameters") or {}).get("properties") or {}
    parts = []
    for name, schema in properties.items():
        limits = [f"{bound}={schema[key]}" for key, bound in (("minimum", "min"), ("maximum", "max")) if key in schema]
        default = f"={schema['default']}" if schema.get("default") is not None else ""
        parts.append(f"{name}{default}" + (f" ({', '.join(limits)})" if limits else ""))
    return "\n".join(parts)


# ---- pipelines ------------------------------------------------------------------------------------------

Limit = Annotated[int | None, typer.Option(min=1, max=100, help="Page size (1-100).")]
Cursor = Annotated[str | None, typer.Option(help="Continue from a previous page's nextCursor.")]
AllPages = Annotated[bool, typer.Option("--all", help="Follow nextCursor through every page.")]


def _gather(page: dict[str, Any], fetch: Callable[[str], dict[str, Any]], all_pages: bool) -> dict[str, Any]:
    """A page, or with --all the items of it and every following page (nextCursor then null)."""
    if not all_pages:
        return page
    items, cursor = list(page["items"]), page.get("nextCursor")
    while cursor:
        more = fetch(cursor)
        items.extend(more["items"])
        cursor = more.get("nextCursor")
    return {"items": items, "nextCursor": None}


def _more_hint(state: CliState, page: dict[str, Any]) -> None:
    if page.get("nextCursor") and not state.json_output:
        state.err.print(shown(f"more: --cursor {page['nextCursor']} (or --all)"), highlight=False)


@pipelines_app.command("list")
def pipelines_list(
    ctx: typer.Context,
    mine: Annotated[bool, typer.Option("--mine", help="Only my pipelines.")] = False,
    user: Annotated[str | None, typer.Option(help="Only this user's pipelines.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    all_pages: AllPages = False,
) -> None:
    """All users' pipelines, newest first (or one user's)."""
    state = _state(ctx)
    client = state.client
    owner = "me" if mine else user
    if owner:
        first = client.user_pipelines(owner, limit, cursor)
        page = _gather(first, lambda c: client.user_pipelines(owner, limit, c), all_pages)
    else:
        page = _gather(client.list_pipelines(limit, cursor), lambda c: client.list_pipelines(limit, c), all_pages)

    def render(out: Console) -> None:
        table = id_table("pipelineId", "name", "author", "stages", "rating", "created")
        for item in page["items"]:
            table.add_row(
                shown(item["pipelineId"]),
                shown(item["name"]),
                shown(item.get("authorName") or item.get("author", "")),
                shown(item.get("stageCount", "")),
                shown(_rating_text(item.get("rating"))),
                shown(item.get("createdAt", "")),
            )
        out.print(table)
        _more_hint(state, page)

    state.emit(page, render)


def id_table(*headers: str) -> Table:
    """A table whose id columns never wrap (ids are copied into the next command)."""
    table = Table()
    for header in headers:
        if header.endswith("Id"):
            table.add_column(header, no_wrap=True, min_width=36)
        else:
            table.add_column(header)
    return table


def _rating_text(rating: dict[str, Any] | None) -> str:
    if not rating or rating.get("average") is None:
        return "-"
    text = f"{rating['average']:.1f} ({rating.get('count', 0)})"
    return text + (f", mine {rating['mine']}" if rating.get("mine") is not None else "")


@pipelines_app.command("show")
def pipelines_show(ctx: typer.Context, pipeline_id: Annotated[str, typer.Argument(metavar="PIPELINE")]) -> None:
    """A pipeline with its stages and rating."""
    state = _state(ctx)
    pipeline = state.client.get_pipeline(pipeline_id)

    def render(out: Console) -> None:
        out.print(f"[bold]{shown(pipeline['name'])}[/bold]  {shown(pipeline['pipelineId'])}")
        if pipeline.get("description"):
            out.print(shown(pipeline["description"], multiline=True), highlight=False)
        author = pipeline.get("authorName") or pipeline.get("author")
        out.print(shown(f"author: {author}  created: {pipeline.get('createdAt')}"), highlight=False)
        out.print(shown(f"rating: {_rating_text(pipeline.get('rating'))}"))
        table = Table("#", "type", "body", "parameters")
        for index, stage in enumerate(pipeline.get("stages", [])):
            body = stage["body"] if stage.get("inline", True) else f"(upload) {stage['body']}"
            table.add_row(
                str(index),
                shown(stage["type"]),
                shown(body, multiline=True),
                shown(json.dumps(stage.get("parameters") or {}, ensure_ascii=False)),
            )
        out.print(table)

    state.emit(pipeline, render)


@pipelines_app.command("create")
def pipelines_create(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Option("--file", "-f", exists=True, dir_okay=False, help="JSON: {name, description, stages}.")
    ],
    name: Annotated[str | None, typer.Option(help="Override the file's name.")] = None,
) -> None:
    """Create a pipeline from a JSON file (see examples/)."""
    state = _state(ctx)
    definition = _read_definition(file)
    pipeline = state.client.create_pipeline(
        name or definition.get("name", file.stem), definition["stages"], definition.get("description") or ""
    )
    state.emit(
        pipeline, lambda out: out.print(shown(f"Created pipeline {pipeline['name']!r}: {pipeline['pipelineId']}"))
    )


def _read_definition(file: Path) -> dict[str, Any]:
    try:
        definition = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise usage_error(f"{file} is not JSON: {error}", "--file") from None
    if not isinstance(definition, dict) or not isinstance(definition.get("stages"), list):
        raise usage_error(f"{file} must be an object with a 'stages' list", "--file")
    return definition


@pipelines_app.command("delete")
def pipelines_delete(ctx: typer.Context, pipeline_id: Annotated[str, typer.Argument(metavar="PIPELINE")]) -> None:
    """Delete one of my pipelines (its executions keep their results)."""
    state = _state(ctx)
    state.client.delete_pipeline(pipeline_id)
    state.emit({"deleted": pipeline_id}, lambda out: out.print(shown(f"Deleted pipeline {pipeline_id}")))


@pipelines_app.command("rate")
def pipelines_rate(
    ctx: typer.Context,
    pipeline_id: Annotated[str, typer.Argument(metavar="PIPELINE")],
    score: Annotated[int, typer.Argument(min=1, max=5, help="1 to 5.")],
) -> None:
    """Rate another user's pipeline (one rating per user; rating again changes it)."""
    state = _state(ctx)
    rating = state.client.rate(pipeline_id, score)
    state.emit(rating, lambda out: out.print(shown(f"Rated {score}; now {_rating_text(rating)}")))


# ---- uploads --------------------------------------------------------------------------------------------


@app.command()
def upload(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    content_type: Annotated[str | None, typer.Option(help="Default: guessed from the file name.")] = None,
) -> None:
    """Upload a prompt text or an image; prints its s3:// URI (a stage body with inline=false, or --var image=)."""
    state = _state(ctx)
    uri = state.client.upload_file(file, content_type)
    state.emit({"uri": uri}, lambda out: out.print(shown(uri), highlight=False))


# ---- runs and executions --------------------------------------------------------------------------------


def _parse_variables(state: CliState, pairs: list[str]) -> dict[str, str]:
    """k=v pairs; a value `@path` uploads that file and passes its s3:// URI (e.g. --var image=@in.png)."""
    variables = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise usage_error(f"{pair!r} is not NAME=VALUE", "--var")
        if value.startswith("@"):
            path = Path(value[1:])
            if not path.is_file():
                raise usage_error(f"no such file: {path}", "--var")
            value = state.client.upload_file(path)
        variables[name] = value
    return variables


def _parse_parameters(pairs: list[str]) -> dict[int | str, dict[str, Any]]:
    """INDEX.NAME=VALUE pairs (VALUE as JSON when it parses, else a string) -> {index: {name: value}}."""
    overrides: dict[int | str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, raw = pair.partition("=")
        index, dot, name = target.partition(".")
        if not sep or not dot or not index.isdigit() or not name:
            raise usage_error(f"{pair!r} is not STAGE.NAME=VALUE (e.g. 0.steps=4)", "--param")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(str(int(index)), {})[name] = value
    return overrides


def progress_description(execution: dict[str, Any], estimate: str | None = None) -> str:
    """What an execution is doing, and while it is not final what the wait is for (text, not markup)."""
    progress = execution.get("progress") or {}
    text = str(execution["status"])
    if text == "QUEUED":
        return f"QUEUED: waiting for a {execution.get('backend') or 'GPU'} worker" + (
            f" ({estimate})" if estimate else ""
        )
    if progress.get("stages"):
        text += f" stage {progress.get('stage', 0)}/{progress['stages']}"
    if progress.get("steps"):
        text += f" step {progress.get('step', 0)}/{progress['steps']}"
    if text.startswith("RUNNING"):
        text += ": waiting for it to finish" + (", cancel requested" if execution.get("cancelRequested") else "")
    return text


def progress_percent(execution: dict[str, Any]) -> float:
    if execution["status"] == "SUCCEEDED":
        return 100.0
    return float((execution.get("progress") or {}).get("percent") or 0)


BACKENDS_REFRESH_S = 60.0


@dataclass
class QueueEstimate:
    """The backend's estimated wait from `GET /backends`, asked at most once a minute and never again after a
    404 (a server without the endpoint)."""

    client: StagehubClient
    clock: Callable[[], float] = time.monotonic
    _text: str | None = None
    _asked_at: float | None = None
    _unsupported: bool = False

    def text(self, execution: dict[str, Any]) -> str | None:
        if execution["status"] != "QUEUED" or self._unsupported:
            return None
        now = self.clock()
        if self._asked_at is None or now - self._asked_at >= BACKENDS_REFRESH_S:
            self._asked_at = now
            backends = self.client.backends()
            if backends is None:
                self._unsupported = True
                return None
            self._text = _estimate_text(backends, execution.get("backend"))
        return self._text


def _estimate_text(backends: list[dict[str, Any]], name: str | None) -> str | None:
    backend = next((b for b in backends if b.get("name") == name), None)
    if backend is None:
        return None
    parts = []
    seconds = backend.get("estimatedWaitSeconds")
    if isinstance(seconds, int | float):
        parts.append(f"about {_duration(float(seconds))}")
    if isinstance(backend.get("queued"), int):
        parts.append(f"{backend['queued']} queued")
    if isinstance(backend.get("workers"), int):
        parts.append(f"{backend['workers']} workers")
    return ", ".join(parts) or None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _wait(state: CliState, execution: dict[str, Any], poll_interval: float, window: int) -> dict[str, Any]:
    """Wait for a final state, one `Prefer: wait` request per window, with a live progress bar on stderr
    unless --json."""
    client = state.client
    execution_id = execution["executionId"]
    if execution["status"] in FINAL_STATUSES:
        return execution
    try:
        if state.json_output:
            return client.wait(execution_id, poll_interval=poll_interval, wait_window=window)
        state.err.print(
            shown(
                f"waiting for execution {execution_id} to finish: one request every {window} s at most "
                "(Ctrl-C stops waiting; the execution keeps running)"
            ),
            highlight=False,
        )
        estimate = QueueEstimate(client)
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=state.err) as progress:
            description = shown(progress_description(execution, estimate.text(execution)))
            task = progress.add_task(description, total=100)

            def on_progress(current: dict[str, Any]) -> None:
                percent = progress_percent(current)
                description = shown(progress_description(current, estimate.text(current)))
                progress.update(task, completed=percent, description=description)

            return client.wait(execution_id, on_progress=on_progress, poll_interval=poll_interval, wait_window=window)
    except KeyboardInterrupt:
        typer.echo(plain(f"\nstopped waiting; execution {execution_id} keeps running"), err=True)
        raise typer.Exit(ExitCode.INTERRUPTED) from None


def _finish(state: CliState, execution: dict[str, Any], output: Path | None) -> None:
    """After --wait: results (when asked and SUCCEEDED), the final state, and exit 5 unless SUCCEEDED."""
    files = []
    if output is not None and execution["status"] == "SUCCEEDED":
        files = [str(path) for path in state.client.download_results(execution["executionId"], output)]

    def render(out: Console) -> None:
        out.print(shown(f"Execution {execution['executionId']} {execution['status']}"), highlight=False)
        for path in files:
            out.print(shown(f"  wrote {path}"), highlight=False)

    state.emit({**execution, "files": files} if output is not None else execution, render)
    if execution["status"] != "SUCCEEDED":
        error = execution.get("error") or {}
        reason = f"{error.get('code')}: {error.get('message')}" if error else "no error reported"
        typer.echo(plain(f"error: execution {execution['status']} ({reason})"), err=True)
        raise typer.Exit(ExitCode.EXECUTION_FAILED)


PollInterval = Annotated[
    float, typer.Option(min=0.05, help="Seconds between status polls when the server does not hold answers.")
]
WaitWindow = Annotated[
    int,
    typer.Option(
        min=1, max=MAX_WAIT_S, help="Seconds the server may hold each status answer (Prefer: wait): one request each."
    ),
]
OutputDir = Annotated[Path | None, typer.Option("--output", "-o", file_okay=False, help="Download results here.")]


@app.command()
def run(
    ctx: typer.Context,
    pipeline_id: Annotated[str, typer.Argument(metavar="PIPELINE")],
    var: Annotated[list[str] | None, typer.Option("--var", help="Variable NAME=VALUE (@file uploads it).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Override STAGE.NAME=VALUE: 0.steps=4.")] = None,
    backend: Annotated[str | None, typer.Option(help="Inference backend (default: the deployment's).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait with a progress bar until it is final.")] = False,
    output: OutputDir = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Default: a fresh one (retries stay safe).")] = None,
    poll_interval: PollInterval = 1.0,
    wait_window: WaitWindow = DEFAULT_WAIT_WINDOW_S,
    webhook: Annotated[
        str | None, typer.Option(help="An https:// URL that gets the execution's signed events (webhooks).")
    ] = None,
    webhook_event: Annotated[
        list[WebhookEvent] | None,
        typer.Option("--webhook-event", help="Which events the webhook gets (repeatable; default: completed)."),
    ] = None,
) -> None:
    """Run a pipeline (any user's). With --wait, exit 5 if it ends FAILED or CANCELLED."""
    state = _state(ctx)
    if webhook_event and not webhook:
        raise usage_error("needs --webhook", "--webhook-event")
    parameters = _parse_parameters(param or [])
    variables = _parse_variables(state, var or [])
    events = [event.value for event in webhook_event] if webhook_event else None
    execution = state.client.run(pipeline_id, variables, backend, parameters, idempotency_key, webhook, events)
    if not wait and output is None:
        state.emit(
            execution, lambda out: out.print(shown(f"Execution {execution['executionId']} {execution['status']}"))
        )
        return
    _finish(state, _wait(state, execution, poll_interval, wait_window), output)


@executions_app.command("list")
def executions_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's executions.")] = None,
    limit: Limit = None,
    cursor: Cursor = None,
    all_pages: AllPages = False,
) -> None:
    """My executions, newest first."""
    state = _state(ctx)
    client = state.client
    wanted = status.upper() if status else None
    if pipeline:
        first = client.pipeline_executions(pipeline, limit, cursor)
        page = _gather(first, lambda c: client.pipeline_executions(pipeline, limit, c), all_pages)
        if wanted:  # the pipeline listing has no status filter: filter here
            page = {**page, "items": [item for item in page["items"] if item["status"] == wanted]}
    else:
        first = client.list_executions(wanted, limit, cursor)
        page = _gather(first, lambda c: client.list_executions(wanted, limit, c), all_pages)

    def render(out: Console) -> None:
        table = id_table("executionId", "pipelineId", "status", "progress", "created", "finished")
        for item in page["items"]:
            table.add_row(
                shown(item["executionId"]),
                shown(item["pipelineId"]),
                shown(item["status"]),
                f"{progress_percent(item):.0f}%",
                shown(item.get("createdAt") or ""),
                shown(item.get("finishedAt") or ""),
            )
        out.print(table)
        _more_hint(state, page)

    state.emit(page, render)


def _render_execution(execution: dict[str, Any]) -> Callable[[Console], None]:
    def render(out: Console) -> None:
        out.print(shown(f"execution {execution['executionId']}  pipeline {execution['pipelineId']}"), highlight=False)
        status = f"status: {progress_description(execution)} ({progress_percent(execution):.0f}%)"
        out.print(shown(status), highlight=False)
        if execution.get("cancelRequested") and execution["status"] not in FINAL_STATUSES:
            out.print("cancel requested")
        if execution.get("error"):
            error = execution["error"]
            out.print(shown(f"error: {error.get('code')}: {error.get('message')}"), highlight=False)
        for label in ("backend", "createdAt", "startedAt", "finishedAt"):
            if execution.get(label):
                out.print(shown(f"{label}: {execution[label]}"), highlight=False)

    return render


ExecutionId = Annotated[str, typer.Argument(metavar="EXECUTION")]


@executions_app.command("show")
def executions_show(ctx: typer.Context, execution_id: ExecutionId) -> None:
    """An execution's status, progress and error."""
    state = _state(ctx)
    execution = state.client.get_execution(execution_id)
    state.emit(execution, _render_execution(execution))


@executions_app.command("wait")
def executions_wait(
    ctx: typer.Context,
    execution_id: ExecutionId,
    output: OutputDir = None,
    poll_interval: PollInterval = 1.0,
    wait_window: WaitWindow = DEFAULT_WAIT_WINDOW_S,
) -> None:
    """Wait for an execution with a progress bar (exit 5 unless it SUCCEEDED)."""
    state = _state(ctx)
    execution = state.client.get_execution(execution_id)
    _finish(state, _wait(state, execution, poll_interval, wait_window), output)


@executions_app.command("deliveries")
def executions_deliveries(
    ctx: typer.Context,
    execution_id: ExecutionId,
    limit: Limit = None,
    cursor: Cursor = None,
    all_pages: AllPages = False,
) -> None:
    """The attempts to deliver an execution's webhook events, newest first."""
    state = _state(ctx)
    client = state.client
    first = client.webhook_deliveries(execution_id, limit, cursor)
    page = _gather(first, lambda c: client.webhook_deliveries(execution_id, limit, c), all_pages)

    def render(out: Console) -> None:
        table = Table("at", "type", "attempt", "status", "webhook-id", "error")
        for item in page["items"]:
            table.add_row(
                shown(item.get("at", "")),
                shown(item.get("type", "")),
                shown(item.get("attempt", "")),
                shown(item.get("status") if item.get("status") is not None else "-"),
                shown(item.get("webhookId", "")),
                shown(item.get("error") or ""),
            )
        out.print(table)
        _more_hint(state, page)

    state.emit(page, render)


@executions_app.command("cancel")
def executions_cancel(ctx: typer.Context, execution_id: ExecutionId) -> None:
    """Cancel a queued or running execution (a running one stops at its next step)."""
    state = _state(ctx)
    execution = state.client.cancel(execution_id)
    state.emit(execution, _render_execution(execution))


@executions_app.command("delete")
def executions_delete(ctx: typer.Context, execution_id: ExecutionId) -> None:
    """Delete an execution and its results (cancelling it if needed)."""
    state = _state(ctx)
    state.client.delete_execution(execution_id)
    state.emit({"deleted": execution_id}, lambda out: out.print(shown(f"Deleted execution {execution_id}")))


@app.command("webhook-secret")
def webhook_secret(
    ctx: typer.Context,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace it (deliveries are then signed with the new one).")
    ] = False,
) -> None:
    """My webhook signing secret (whsec_...): verify deliveries with stagehub_cli.client.verify_webhook."""
    state = _state(ctx)
    secret = state.client.webhook_secret(rotate=rotate)
    state.emit({"secret": secret}, lambda out: out.print(shown(secret), highlight=False))


@app.command()
def results(
    ctx: typer.Context,
    execution_id: ExecutionId,
    output: Annotated[Path, typer.Option("--output", "-o", file_okay=False, help="Directory to write into.")] = Path(
        "."
    ),
) -> None:
    """Download a SUCCEEDED execution's images and texts (stage<N>-<i>.png / .txt)."""
    state = _state(ctx)
    files = [str(path) for path in state.client.download_results(execution_id, output)]

    def render(out: Console) -> None:
        for path in files:
            out.print(shown(f"wrote {path}"), highlight=False)

    state.emit({"executionId": execution_id, "files": files}, render)


def main() -> None:
    app(prog_name=APP_NAME)


if __name__ == "__main__":
    main()
