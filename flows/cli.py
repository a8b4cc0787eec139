"""The `tribes` command: import posts, refresh clusters, show results."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from flows.console import SafeConsole
from pipeline.settings import (
    RefreshOptions,
    Settings,
    SettingsError,
    closest_setting,
    load_settings,
    settings_file,
    unknown_variables,
)

if TYPE_CHECKING:
    from flows.evaluate import Scores

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "fb_pages_sample.parquet"
PRODUCTS = SAMPLE.with_name("products.csv")  # project-authored demo catalogue, CC0

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False
)


def new_consoles() -> tuple[SafeConsole, SafeConsole]:
    """Output and error consoles on the current stdout and stderr. Both strip control
    characters: crawled text cannot drive the terminal."""
    return SafeConsole(markup=False), SafeConsole(stderr=True)  # names may hold [brackets]


console, errors = new_consoles()
state: dict[str, object] = {}


def fail(message: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def say(line: str) -> None:
    """One line of plain output (never highlighted, never cut: paths and ids stay copyable)."""
    console.print(line, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    errors.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def settings(**overrides: object) -> Settings:
    try:
        return load_settings(db=state.get("db"), **overrides)
    except SettingsError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(setting_problem(exc)) from None


def loaded() -> Settings:
    """The settings `main` loaded for this command."""
    return cast(Settings, state["settings"])


def setting_problem(exc: ValidationError) -> str:
    """The first invalid setting, in one line."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    if first["type"] == "extra_forbidden":  # only tribes.toml can name an unknown setting
        near = closest_setting(where)
        return f"{settings_file()}: unknown setting {where}" + (
            f" (did you mean {near}?)" if near else ""
        )
    return f"bad setting {where}: {first['msg']} (check flags, TRIBES_* and tribes.toml)"


def prepare(config: Settings) -> None:
    """What every command does first: warn about mistyped TRIBES_* variables, and keep Prefect's
    files in a writable state folder."""
    for warning in unknown_variables(os.environ):
        warn(warning)
    use_project_prefect_home(config)


def use_project_prefect_home(config: Settings) -> None:
    """Keep Prefect's database, caches and results in the state folder, not in $HOME."""
    from flows.files import writable_folder

    home = (config.state / "prefect").resolve()
    try:
        writable_folder(home, "state folder")
    except ValueError as exc:
        raise fail(f"{exc} (state_dir, TRIBES_STATE_DIR)") from None
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(home / "storage"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy CPUs
    use_running_server(Path(os.environ["PREFECT_HOME"]))


def use_running_server(home: Path) -> None:
    """Run flows on the Prefect server `make serve` runs for this home (seconds saved per
    command, runs visible in its UI) unless PREFECT_API_URL names one; else Prefect starts a
    temporary server."""
    from flows.serve import running_server

    if not os.environ.get("PREFECT_API_URL") and (api_url := running_server(home)):
        os.environ["PREFECT_API_URL"] = api_url


def run_guarded(action):
    """Run an action and turn the errors users can fix into one line and exit 1."""
    from pipeline.embed import ModelError
    from pipeline.ingest import IngestError
    from pipeline.store import StoreError

    try:
        return action()
    except (StoreError, ModelError, IngestError, ValueError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def show_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        console.print(f"tribes {version('tribes')}")
        raise typer.Exit()


def prefect_console(verbose: bool) -> None:
    """Prefect's INFO lines reach the terminal only with -v (the Prefect UI gets them always);
    warnings and errors always do. Set before Prefect configures its logging, or on its console
    handlers when it has (a process that imported it already, e.g. a test)."""
    level = "INFO" if verbose else "WARNING"
    if "prefect.logging.handlers" not in sys.modules:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = level
    else:
        from prefect.logging.handlers import PrefectConsoleHandler

        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, PrefectConsoleHandler):
                    handler.setLevel(level)


def show_progress(ctx: typer.Context, forced: bool | None) -> None:
    """Progress bars on stderr for this command: when it is a terminal, or as forced."""
    from flows.console import ProgressBars
    from pipeline import progress

    if forced is False or (forced is None and not errors.is_terminal):
        return
    bars = ProgressBars(SafeConsole(stderr=True, force_terminal=True) if forced else errors)
    ctx.with_resource(bars)
    ctx.with_resource(progress.showing(bars))


@app.callback()
def main(
    ctx: typer.Context,
    db: Annotated[
        Path | None, typer.Option(help="DuckDB file; default from env TRIBES_DB or tribes.toml")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also show Prefect's INFO log lines")
    ] = False,
    bars: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="progress bars on stderr; default: on a terminal"
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Tribes: find the interest communities among social-media users."""
    from flows.lifetime import stop_on_signals

    stop_on_signals()  # Ctrl-C and SIGTERM stop any command within seconds
    prefect_console(verbose)
    state["db"] = db
    state["options"] = [  # as given: what the crawl service runs (flows/warm.py)
        *(["--db", str(db)] if db else []),
        *(["-v"] if verbose else []),
        *([] if bars is None else ["--progress" if bars else "--no-progress"]),
    ]
    state["settings"] = settings()
    prepare(loaded())
    show_progress(ctx, bars)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file of posts")],
    platform: Annotated[str, typer.Option(help="platform name stored with each post")] = "import",
    user_col: str = "user_id",
    text_col: str = "text",
    id_col: str = "post_id",
    time_col: Annotated[str, typer.Option(help="'' when the file has no time")] = "created_at",
    label_col: Annotated[str | None, typer.Option(help="optional known label per user")] = None,
    name_col: Annotated[str | None, typer.Option(help="optional display name per user")] = None,
    likes_col: Annotated[str | None, typer.Option(help="optional likes per post")] = None,
    reposts_col: Annotated[str | None, typer.Option(help="optional reposts per post")] = None,
    replies_col: Annotated[str | None, typer.Option(help="optional replies per post")] = None,
    kind_col: Annotated[str | None, typer.Option(help="optional kind (original, photo...)")] = None,
    lang_col: Annotated[str | None, typer.Option(help="optional language tag per post")] = None,
    reply_to_col: Annotated[str | None, typer.Option(help="optional user id replied to")] = None,
    maps: Annotated[
        list[str] | None,
        typer.Option("--map", help="FIELD=COLUMN for any field, e.g. repost_of=, mentions="),
    ] = None,
    person_col: Annotated[
        str | None, typer.Option(help="optional person per user: same person, one person")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, jsonl or parquet")] = None,
    encoding: str = "utf-8",
) -> None:
    """Load posts into the database (keyed by platform + post id: re-imports add nothing)."""
    from flows.imports import import_file
    from pipeline.ingest import ColumnMap

    columns = ColumnMap(
        user_col, text_col, id_col, time_col or None, label_col, name_col, likes_col,
        reposts_col, replies_col, kind_col, lang_col, reply_to_col,
    )  # fmt: skip
    config = settings()
    report = run_guarded(
        lambda: import_file(
            config, str(file), platform, columns.mapped(maps or []), fmt, encoding, person_col
        )
    )
    say(f"{file.name}: {report.summary()}")
    if report.inserted:
        assign_after(config)


@app.command()
def assign() -> None:
    """Place accounts that joined since the latest run into their nearest cluster, marked
    provisional until the next refresh (runs by itself after import and crawl)."""
    from flows.assign import assign_new_accounts

    done = run_guarded(lambda: assign_new_accounts(settings()))
    say(done.summary())
    if done.members.height:
        view = Table(title=f"Provisional clusters (run {done.run_id})")
        for column in ("account", "cluster", "probability"):
            view.add_column(column, overflow="fold")
        for row in done.members.sort("cluster_id", "user_id").head(50).iter_rows(named=True):
            low = " (low confidence)" if row["is_outlier"] else ""
            view.add_row(
                f"{row['platform']}:{row['user_id']}",
                str(row["cluster_id"]),
                f"{row['probability']:.2f}{low}",
            )
        console.print(view)


def assign_after(config: Settings) -> None:
    """After new posts came in: provisional clusters for new accounts when a completed run
    exists; a reason it cannot is a warning, never a failure of the import or crawl."""
    from flows.assign import assign_new_accounts
    from pipeline import store
    from pipeline.embed import ModelError

    try:
        with store.open(config) as con:
            if store.latest_run_id(con) is None:
                return
        done = assign_new_accounts(config)
    except (store.StoreError, ModelError, ValueError) as exc:
        warn(f"no provisional clusters: {str(exc).splitlines()[0]}")
        return
    say(done.summary())


def option_flags() -> list[inspect.Parameter]:
    """One optional --flag per refresh option, typed and described as its setting."""
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Settings.model_fields[name].annotation | None, typer.Option(help=field.description)
            ],
        )
        for name, field in RefreshOptions.model_fields.items()
    ]


def with_option_flags(command: Callable[..., None]) -> Callable[..., None]:
    """`command(options: RefreshOptions, ...)` as a command taking each option as a --flag."""
    flags = option_flags()
    rest = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "options"
    ]

    @functools.wraps(command)
    def flagged(**given: object) -> None:
        try:
            options = RefreshOptions(**{flag.name: given.pop(flag.name, None) for flag in flags})
        except ValidationError as exc:
            raise fail(setting_problem(exc)) from None
        command(options=options, **given)

    flagged.__signature__ = inspect.Signature([*flags, *rest])  # type: ignore[attr-defined]
    flagged.__annotations__ = {p.name: p.annotation for p in [*flags, *rest]}
    return flagged


@app.command()
@with_option_flags
def refresh(
    options: RefreshOptions,
    full: Annotated[bool, typer.Option(help="ignore every cache")] = False,
    force: Annotated[
        bool, typer.Option(help="store a new run even when nothing changed since the last one")
    ] = False,
) -> None:
    """Embed new posts and re-cluster every user; stores a new run (unless nothing changed)."""
    config = options.apply(loaded())
    check_refresh(config)
    if not (full or force) and (same := unchanged_since(config)):
        show_clusters(config, same)
        say(
            f"nothing changed since run {same} (same posts, accounts, links, products, settings, "
            "model and code): no new run; --force stores one"
        )
        say(f"report: {report_page(config, same)}")
        return
    from flows.refresh import refresh as refresh_flow

    run_id = run_guarded(lambda: refresh_flow(db=str(config.db), options=options, full=full))
    show_clusters(config, run_id)
    show_refresh_time(config, run_id)
    if report_page(config, run_id).exists():
        say(f"report: {report_page(config, run_id)}")


def report_page(config: Settings, run_id: str) -> Path:
    return (config.reports_dir / run_id / "report.html").resolve()


def unchanged_since(config: Settings) -> str | None:
    """The latest run, when it read exactly what a refresh now would (flows/inputs.py) and its
    report is there; found without starting Prefect."""
    from flows.inputs import run_inputs
    from pipeline import store

    def latest_same() -> str | None:
        with store.open(config) as con:
            return store.unchanged_run(con, run_inputs(config, con))

    same = run_guarded(latest_same)
    return same if same and report_page(config, same).exists() else None


def show_refresh_time(config: Settings, run_id: str) -> None:
    from pipeline import store
    from pipeline.report import refresh_time

    def read():
        with store.open(config) as con:
            return store.run_info(con, run_id)

    took = refresh_time(run_guarded(read))
    say(f"run {run_id}: refresh time {took}")


def check_refresh(config: Settings) -> None:
    """Refuse, before Prefect starts, a refresh that cannot work: a model path that cannot load,
    a database without users to cluster; warn when min_cluster_size exceeds the users."""
    from pipeline import embed, store

    def counts() -> store.PostCounts:
        embed.check_model(config.model)
        with store.open(config) as con:
            return store.post_counts(con, config.min_posts_per_user)

    found = run_guarded(counts)
    least = f"min_posts_per_user={config.min_posts_per_user}"
    if found.posts == 0:
        raise fail(f"database {config.db} holds no posts: run `tribes import` first")
    if found.users_with_enough == 0:
        raise fail(
            f"no user has at least {least} posts ({found.users} users, {found.posts} posts): "
            "import more posts or lower min_posts_per_user"
        )
    if config.min_cluster_size and config.min_cluster_size > found.users_with_enough:
        warn(
            f"min_cluster_size={config.min_cluster_size} exceeds the {found.users_with_enough} "
            f"users to cluster (those with at least {least} posts): it is capped at half of them"
        )


LEVELS = ("fine", "coarse")


@app.command()
def clusters(
    run: Annotated[str | None, typer.Option(help="run id; default latest")] = None,
    level: Annotated[
        str,
        typer.Option(help="fine: the clusters, with their group; coarse: the groups above them"),
    ] = "fine",
) -> None:
    """Print the clusters of the latest completed run (or --run)."""
    if level not in LEVELS:
        raise fail(f"--level must be fine or coarse, not {level!r}")
    show_clusters(settings(), run, level)


def show_clusters(config: Settings, run_id: str | None, level: str = "fine") -> None:
    from pipeline import store

    def read():
        with store.open(config) as con:
            chosen = run_id or store.latest_run_id(con)
            if chosen is None:
                raise store.StoreError("no completed run yet: run `tribes refresh` first")
            return chosen, store.cluster_table(con, chosen, level), store.left_out(con, chosen)

    chosen, table, left_out = run_guarded(read)
    if table.height == 0 and level == "coarse":
        raise fail(f"run {chosen} has no coarse level (made before it existed): refresh again")
    if table.height == 0:
        raise fail(f"run {chosen} has no clusters (unknown or unfinished run id?)")
    title = "Interest clusters" if level == "fine" else "Groups (coarse level)"
    view = Table(title=f"{title} of run {chosen}", show_lines=True)
    related = "group" if level == "fine" else "sub-groups"
    for column in ("id", "users", "label", "top terms", "example users", related):
        view.add_column(column, overflow="fold")
    for row in table.iter_rows(named=True):
        size = f"{row['size']}" + (f" ({row['n_outliers']} low-conf.)" if row["n_outliers"] else "")
        size += f" +{row['n_provisional']} provisional" if row["n_provisional"] else ""
        view.add_row(
            str(row["cluster_id"]),
            size,
            row["label"],
            row["top_terms"] or "",
            ", ".join(row["example_users"] or []),
            relatives(row, level),
        )
    console.print(view)
    for line in left_out_lines(left_out, config.min_posts_per_user):
        say(line)


def relatives(row: dict, level: str) -> str:
    """A fine cluster's group ('id: label') or a coarse group's sub-groups (ids)."""
    if level == "coarse":
        return ", ".join(map(str, row["children"] or []))
    return "" if row["parent_id"] is None else f"{row['parent_id']}: {row['parent_label']}"


def left_out_lines(counts: dict[str, int], min_posts: int) -> list[str]:
    """What became of the users with too little text: placed (low confidence) or not clustered."""
    from pipeline.hierarchy import NO_TEXT, TOO_LITTLE_TEXT

    lines = []
    if placed := counts.get(TOO_LITTLE_TEXT):
        lines.append(
            f"{placed} users with too little text (fewer than {min_posts} posts) were placed in "
            "their nearest cluster, as low-confidence members"
        )
    if missing := counts.get(NO_TEXT):
        lines.append(f"not clustered: {missing} users whose posts are empty once cleaned")
    return lines


@app.command()
def status(limit: Annotated[int, typer.Option(min=1, help="how many runs")] = 10) -> None:
    """The latest refresh runs with duration and outcome (also as `tribes runs`)."""
    from pipeline import store

    config = settings()

    def read():
        with store.open(config) as con:
            return store.runs_table(con, limit)

    table = run_guarded(read)
    view = Table(title="Refresh runs")
    view.add_column("run", no_wrap=True, min_width=max(map(len, table["run_id"]), default=3))
    for column in ("status", "started (UTC)", "seconds", "posts", "users", "clusters"):
        view.add_column(column, no_wrap=True)
    view.add_column("error", overflow="fold", ratio=1)  # only the error wraps (ids copy whole)
    for row in table.iter_rows(named=True):
        view.add_row(
            row["run_id"],
            row["status"],
            f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
            "" if row["seconds"] is None else f"{row['seconds']:.1f}",
            str(row["n_posts"] or ""),
            f"{row['n_users'] or ''}"
            + (f" +{row['n_provisional']} provisional" if row["n_provisional"] else ""),
            *(str(row[c] or "") for c in ("n_clusters", "error")),
        )
    console.print(view)


app.command("runs", hidden=True)(status)  # the command's name before `status`


@app.command()
def config() -> None:
    """Print the effective settings (defaults < tribes.toml < TRIBES_* < flags)."""
    view = Table(title="Effective settings")
    view.add_column("setting")
    view.add_column("value")
    for key, value in settings().model_dump(mode="json").items():
        view.add_row(key, repr(value))
    console.print(view)


products_app = typer.Typer(
    no_args_is_help=True, help="The product catalogue that recommendations draw from."
)
app.add_typer(products_app, name="products")


@products_app.command("import")
def products_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, JSON, JSON Lines or Parquet with id, name, description[, category, url]"
        ),
    ],
) -> None:
    """Replace the product catalogue with FILE (every row is checked first)."""
    from flows.recommend import import_catalogue

    config = settings()
    count = run_guarded(lambda: import_catalogue(config, str(file)))
    console.print(
        f"{file.name}: {count} products; the next `tribes refresh` ranks them for "
        "every cluster and user",
        highlight=False,
        soft_wrap=True,
    )


people_app = typer.Typer(
    no_args_is_help=True, help="One person's accounts across platforms (docs/people.md)."
)
app.add_typer(people_app, name="people")
ACCOUNT_ARG = typer.Argument(help="PLATFORM:USER, e.g. mastodon:Gargron@mastodon.social")


@people_app.command("suggest")
def people_suggest(
    min_score: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="default: people_min_score")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or csv")] = "table",
) -> None:
    """Pairs of accounts on different platforms that may be one person, best first."""
    from flows.people import suggest

    if fmt not in ("table", "csv"):
        raise fail(f"--format {fmt!r}: use table or csv")
    config = settings()
    found = run_guarded(
        lambda: suggest(config, config.people_min_score if min_score is None else min_score)
    )
    if fmt == "csv":
        console.print(found.write_csv(), end="", highlight=False, soft_wrap=True)
        return
    view = Table(title=f"{found.height} suggested pairs (link them with `tribes people link`)")
    for column in found.columns:
        view.add_column(column, overflow="fold")
    for row in found.iter_rows():
        view.add_row(*(cell(value) for value in row))
    console.print(view)


@people_app.command("link")
def people_link(first: Annotated[str, ACCOUNT_ARG], second: Annotated[str, ACCOUNT_ARG]) -> None:
    """Confirm that two accounts are one person."""
    from flows.people import link

    config = settings()
    console.print(run_guarded(lambda: link(config, first, second)), highlight=False)


@people_app.command("unlink")
def people_unlink(first: Annotated[str, ACCOUNT_ARG], second: Annotated[str, ACCOUNT_ARG]) -> None:
    """Reject a pair: never one person by suggestion, never suggested again."""
    from flows.people import unlink

    config = settings()
    console.print(run_guarded(lambda: unlink(config, first, second)), highlight=False)


@people_app.command("list")
def people_list() -> None:
    """People of several accounts, with how each account was linked."""
    from flows.people import list_people

    config = settings()
    found = run_guarded(lambda: list_people(config))
    view = Table(title=f"{found['person_id'].n_unique()} people of several accounts")
    for column in ("person", "platform", "user", "name", "linked by"):
        view.add_column(column, overflow="fold")
    for row in found.iter_rows():
        view.add_row(*(cell(value) for value in row))
    console.print(view)


@app.command()
def forget(account: Annotated[str, ACCOUNT_ARG]) -> None:
    """Remove an account's posts, vectors, links, clusters and recommendations for good."""
    from flows.people import forget as forget_account

    config = settings()
    console.print(run_guarded(lambda: forget_account(config, account)), highlight=False)


@app.command()
def recommend(
    user: Annotated[str | None, typer.Option(help="user id, display name or platform:id")] = None,
    cluster: Annotated[int | None, typer.Option(help="cluster id")] = None,
    run: Annotated[str | None, typer.Option(help="run id; default latest")] = None,
) -> None:
    """Print the products recommended to one user (--user) or one cluster (--cluster)."""
    from flows.recommend import recommendations_for

    config = settings()
    title, found = run_guarded(lambda: recommendations_for(config, user, cluster, run))
    view = Table(title=f"Recommendations for {title}", show_lines=True)
    for column in ("#", "product", "category", "score", "why"):
        view.add_column(column, overflow="fold")
    for row in found.iter_rows(named=True):
        view.add_row(
            str(row["rank"]),
            row["name"],
            row["category"] or "",
            f"{row['score']:.3f}",
            row["reason"] or "",
        )
    console.print(view)


@app.command("cluster")
def cluster_command(
    cluster_id: Annotated[int, typer.Argument(help="cluster id (`tribes clusters` lists them)")],
    run: Annotated[str | None, typer.Option(help="run id; default latest")] = None,
) -> None:
    """How to reach one cluster: best times to post, what engages it, its central and bridging
    accounts, rising topics and top products."""
    from flows.facts import show_fact_sheet

    config = settings()
    run_guarded(lambda: show_fact_sheet(console, config, cluster_id, run))


@app.command()
def compare(
    a: Annotated[int, typer.Argument(help="a cluster id")],
    b: Annotated[int, typer.Argument(help="another cluster id")],
    run: Annotated[str | None, typer.Option(help="run id; default latest")] = None,
) -> None:
    """What two clusters share and what sets each apart: terms, activity, engagement."""
    from flows.facts import show_comparison

    config = settings()
    run_guarded(lambda: show_comparison(console, config, a, b, run))


@app.command("report")
def report_command(
    run: Annotated[str | None, typer.Option(help="run id; default latest")] = None,
    out: Annotated[Path | None, typer.Option(help="folder; default STATE/reports/RUN_ID")] = None,
) -> None:
    """Write a run's self-contained HTML report and PNG map; prints the report's path."""
    from flows.report import write_report

    config = settings()
    page = run_guarded(lambda: write_report(config, run, out))
    say(f"report: {page}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="folder the files are written to")],
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet or json")] = "csv",
    run: Annotated[str | None, typer.Option(help="run id; default latest")] = None,
) -> None:
    """Write a run's users (cluster, probability, x, y), clusters (label, terms), terms and
    recommendations as files for other tools (columns: docs/export.md)."""
    from flows.export import export_run

    config = settings()
    for path in run_guarded(lambda: export_run(config, run, fmt, out)):
        say(str(path))


def run_in_warm_service(command: list[str]) -> None:
    """When `make serve`'s warm crawl service runs for this Prefect home, let it run `command`
    on this terminal and exit with its status (flows/warm.py: seconds saved)."""
    from flows import warm

    home = Path(os.environ["PREFECT_HOME"])
    status = warm.forward(home, [*state["options"], *command], warn)
    if status is not None:
        raise typer.Exit(status)


@app.command("crawl-service", hidden=True)
def crawl_service(
    home: Annotated[Path, typer.Argument(help="the Prefect home it serves")],
) -> None:
    """The warm crawl service `make serve` starts (flows/warm.py); runs until Ctrl-C."""
    from flows import warm

    with contextlib.suppress(KeyboardInterrupt):
        warm.serve(home, run_in_child)


def run_in_child(argv: list[str]) -> int:
    """A `tribes` command line run in a warm service child, on its caller's terminal (its size
    and colours: fresh consoles); returns the exit status."""
    global console, errors
    console, errors = new_consoles()
    try:
        app(argv, prog_name="tribes")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@app.command()
def crawl(
    sources: Annotated[Path | None, typer.Option(help="default sources.yaml")] = None,
    source: Annotated[str | None, typer.Option(help="crawl only the source of this name")] = None,
    max_posts_per_user: Annotated[
        int | None, typer.Option(min=1, help="collect at most the N newest posts per account")
    ] = None,
    since: Annotated[str | None, typer.Option(help="YYYY-MM-DD: skip older posts")] = None,
) -> None:
    """Collect new public posts of the accounts in sources.yaml (incremental and polite)."""
    from datetime import date

    given = {
        "--sources": sources,
        "--source": source,
        "--max-posts-per-user": max_posts_per_user,
        "--since": since,
    }
    flags = [str(x) for flag, value in given.items() if value is not None for x in (flag, value)]
    run_in_warm_service(["crawl", *flags])
    from flows.crawl import CrawlError
    from flows.crawl import crawl as crawl_flow
    from scrapers.sources import load_sources

    config = settings(sources=sources)
    try:
        since_day = date.fromisoformat(since) if since else None
    except ValueError:
        raise fail(f"--since {since!r} is not a date like 2024-01-31") from None
    run_guarded(lambda: load_sources(config.sources).select(source))
    if not config.contact:
        warn(
            "no `contact` setting: sites cannot tell who crawls them "
            "(set contact in tribes.toml, see docs/crawling.md)"
        )
    try:
        summary = run_guarded(
            lambda: crawl_flow(
                db=str(config.db),
                sources=str(config.sources),
                source=source,
                max_posts_per_user=max_posts_per_user,
                since=since_day,
            )
        )
    except CrawlError as exc:
        raise fail(str(exc)) from None
    view = Table(title=f"Crawl {summary.crawl_id}")
    view.add_column("source")
    view.add_column("account", overflow="fold")
    for column in ("new", "updated", "unchanged", "skipped", "errors"):
        view.add_column(column, justify="right")
    view.add_column("last error", overflow="fold")
    for row in summary.accounts:
        errors = Text(str(row.errors), style="red" if row.errors else "")
        view.add_row(
            row.source,
            row.account,
            str(row.new),
            str(row.updated),
            str(row.unchanged),
            str(row.skipped),
            errors,
            row.reason or "",
        )
    console.print(view)
    say(summary.line())
    if summary.accounts and all(row.errors for row in summary.accounts):
        raise fail(f"every account failed (reasons above; log: {summary.log})")
    if summary.total("new"):
        assign_after(config)


@app.command()
def evaluate(
    labels: Annotated[
        str, typer.Option(help="users column 'label', or a CSV/Parquet file (user_id, label)")
    ] = "label",
    seeds: Annotated[int, typer.Option(min=1, max=5, help="refreshes with different seeds")] = 5,
) -> None:
    """Refresh with several seeds and score the clusters against known user labels, beside the
    original study's method (one concatenated string per user, UMAP 2-D, KMeans 7) and a plain
    baseline (mean of single posts, UMAP 5-D, HDBSCAN users/40)."""
    from flows.evaluate import SEEDS, evaluate_plain, evaluate_study, evaluate_tribes, read_labels

    config = settings()
    known = run_guarded(lambda: read_labels(config, labels))
    if known.height == 0:
        raise fail(f"no known labels found in {labels!r}: import with --label-col first")
    rows = [
        run_guarded(lambda: evaluate_tribes(config, known, SEEDS[:seeds])),
        run_guarded(lambda: evaluate_study(config, known, SEEDS[:seeds])),
        run_guarded(lambda: evaluate_plain(config, known, SEEDS[:seeds])),
    ]
    view = Table(title=f"Clusters vs known labels ({known.height} labelled users)")
    metrics = {
        "ARI": "ari",
        "NMI": "nmi",
        "AMI": "ami",
        "clusters": "n_clusters",
        "noise before reassignment": "noise_share",
        "largest cluster": "largest",
        f"mean ARI, {seeds} seeds": "seed_ari",
        f"mean NMI, {seeds} seeds": "seed_nmi",
        f"mean clusters, {seeds} seeds": "seed_clusters",
        "stability across seeds": "stability",
        "NPMI of top-10 terms": "npmi",
        "topic diversity": "diversity",
    }
    view.add_column("metric")
    view.add_column("tribes", justify="right")
    view.add_column("study", justify="right")
    view.add_column("plain", justify="right")
    for name, attribute in metrics.items():
        view.add_row(name, *(cell(getattr(row, attribute)) for row in rows))
    console.print(view)
    console.print(
        "study = the original study's method: each user's posts as ONE string (its first 512 "
        "tokens), UMAP 2-D, KMeans k=7; plain = the mean of each user's single-post vectors, "
        "UMAP 5-D (15 neighbours), HDBSCAN min_cluster_size users/40, noise to the nearest",
        soft_wrap=True,
    )
    console.print(composition_table(rows[0]))
    console.print(
        f"ARI {rows[0].ari:.3f}; with the clusters that share a main label merged: "
        f"{rows[0].main_label_ari:.3f} (far above the ARI: clusters finer than the labels)",
        soft_wrap=True,
    )


def composition_table(tribes: Scores) -> Table:
    """Tribes' clusters with the known labels inside each (first seed)."""
    view = Table(title="Tribes' clusters and the known labels in them")
    for column in ("cluster", "label", "users", "known labels", "main label's share"):
        view.add_column(column, justify="right" if column in ("users", "cluster") else "left")
    for row in tribes.composition.iter_rows(named=True):
        view.add_row(
            str(row["cluster_id"]),
            row["label"],
            str(row["users"]),
            row["known_labels"],
            f"{row['main_share']:.0%}",
        )
    return view


def cell(value: object) -> str:
    """A table cell: floats to 3 decimals, a missing value as a dash."""
    return f"{value:.3f}" if isinstance(value, float) else "–" if value is None else str(value)


@app.command()
def demo() -> None:
    """Crawl the bundled sample of real Facebook page posts, refresh, print the clusters."""
    from flows.crawl import collect_demo_sample

    console.print(
        f"crawling the bundled sample {SAMPLE.name} (MIT, see data/sample/LICENSE) "
        "with the Scrapy spider from a Mastodon-style server on 127.0.0.1"
    )
    summary = run_guarded(lambda: collect_demo_sample(settings()))
    say(summary.line())
    products_import(PRODUCTS)
    refresh()


if __name__ == "__main__":
    sys.exit(app())
