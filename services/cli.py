"""The `carepath` command: run the system, one service, a worker; migrate; mint tokens."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shared.names import SERVICES, Role

# Each command imports what it needs when it runs: `carepath token` or `carepath clock
# show` must not pay for the web framework, the ORM and the broker at start-up.
if TYPE_CHECKING:
    from litestar import Litestar
    from pydantic import ValidationError

    from shared.client import CarepathClient, ClockReading, FeedComparison
    from shared.runtime import ServiceRuntime
    from shared.settings import PlatformSettings
    from shared.tokens import Signing

service_choice = click.Choice(SERVICES)
# The web service serves pages and keeps nothing: it runs, but has no database or worker.
WEB = "web"


def _platform(**overrides: object) -> PlatformSettings:
    from pydantic import ValidationError

    from shared.clock import configure_clock
    from shared.observability import configure_logging
    from shared.policy import PolicyError, clinical_policy
    from shared.settings import InsecureConfiguration, PlatformSettings

    try:
        settings = PlatformSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise click.ClickException(_settings_refused(error)) from None
    try:
        settings.check_production()
        clinical_policy()  # a bad threshold stops the service, naming its key
    except (InsecureConfiguration, PolicyError) as error:
        raise click.ClickException(str(error)) from None
    configure_logging(settings.log_level, settings.json_logs)
    configure_clock(settings)
    return settings


def _settings_refused(error: ValidationError) -> str:
    """Each refused setting as the variable to change and the rule it breaks; never its
    value, which may be a secret."""
    refused = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "settings"
        refused.append(f"CAREPATH_{field.upper()}: {problem['msg']}")
    return "refused settings: " + "; ".join(refused)


@click.group()
def main() -> None:
    """carepath: one care pathway per patient for chronic pain and depression."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the SQLite files [default: ./data, or CAREPATH_DATA_DIR]",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Once up, seed a synthetic cohort of about 50 patients through the APIs "
    "(not again if the data folder already has patients)",
)
def up(host: str, port: int, data_dir: Path | None, demo: bool) -> None:
    """Run every service, and the web pages, in this one process on the embedded default."""
    from services.registry import all_specs
    from services.web.app import WEB as WEB_PAGES
    from shared.messaging import InProcessWorkers, make_broker
    from shared.runtime import ServiceRuntime
    from shared.settings import load_service_settings
    from shared.web import build_app

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    platform = _platform(**overrides)
    broker = make_broker(platform)
    # Compares, never binds: the demo seeder calls the server on loopback.
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104  # nosec B104
    runtimes = [
        ServiceRuntime(
            spec, load_service_settings(spec.name, platform, default_base_url=base), broker
        )
        for spec in all_specs()
    ]
    workers = InProcessWorkers(broker, platform.worker_threads, platform.worker_poll_ms)
    app = build_app(
        runtimes,
        broker,
        platform,
        embedded=True,
        migrate_on_start=True,
        workers=workers,
        web=WEB_PAGES,
    )
    click.echo(f"carepath is starting on {base} (data in {platform.data_dir.resolve()})", err=True)
    if demo:
        _seed_demo_when_up(base, platform)
    _run(app, host, port, platform)


def _seed_demo_when_up(base: str, platform: PlatformSettings) -> None:
    """Seed the demo cohort from a background thread once /health answers; a failure is
    reported (its type only: a message could quote patient data) and the server runs on."""
    from services import demo

    identities = ", ".join(f"{role.value} {user}" for user, role in demo.DEV_IDENTITIES)
    click.echo(
        f"demo: seeding once the server is up; dev identities ({identities}); "
        "a token: carepath token --role ROLE --user USER",
        err=True,
    )

    def seed() -> None:
        try:
            demo.wait_for_server(base)
            summary = demo.seed_cohort(base, platform)
        except Exception as error:  # the server must outlive a failed demo
            click.echo(f"demo cohort not seeded: {type(error).__name__}", err=True)
            return
        click.echo(demo.describe(summary), err=True)

    threading.Thread(target=seed, name="carepath-demo", daemon=True).start()


def _distributed_runtime(service: str) -> tuple[PlatformSettings, ServiceRuntime]:
    from services.registry import spec_of
    from shared.messaging import make_broker
    from shared.runtime import ServiceRuntime
    from shared.settings import BrokerKind, load_service_settings

    platform = _platform(broker=BrokerKind.redis)
    broker = make_broker(platform)
    runtime = ServiceRuntime(spec_of(service), load_service_settings(service, platform), broker)
    return platform, runtime


@main.command()
@click.argument("service", type=click.Choice([*SERVICES, WEB]))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port, each with the whole app",
)
def serve(service: str, host: str, port: int, workers: int) -> None:
    """Run one service's API against its database and Redis, or the web pages against the
    services' APIs (`serve web`, at each CAREPATH_<SERVICE>_URL): the distributed mode."""
    if workers == 1:
        app = _service_app(service)
        _run(app, host, port, app.state.platform)
        return

    # Each worker process builds the same app, and configures itself (logging, the clock)
    # as it does.
    os.environ[SERVE_ENV] = service
    _run(f"{__name__}:service_app", host, port, _platform(), workers=workers)


# `carepath serve` names its service here for `service_app`, which a server that starts
# its own worker processes (uvicorn --workers, granian) calls in each of them.
SERVE_ENV = "CAREPATH_SERVE"


def service_app() -> Litestar:
    """The app `carepath serve` runs for the service named in CAREPATH_SERVE."""
    return _service_app(os.environ[SERVE_ENV])


def _service_app(service: str) -> Litestar:
    from shared.web import build_app

    if service == WEB:
        return _web_app()
    platform, runtime = _distributed_runtime(service)
    return build_app(
        [runtime],
        runtime.broker,
        platform,
        embedded=False,
        migrate_on_start=False,
        title=f"carepath {service}",
    )


def _web_app() -> Litestar:
    """The pages alone: no database, no broker of its own, no worker."""
    from dramatiq.brokers.stub import StubBroker

    from services.web.app import WEB as WEB_PAGES
    from shared.names import peer_urls
    from shared.web import build_app

    return build_app(
        [],
        StubBroker(),
        _platform(),
        embedded=False,
        migrate_on_start=False,
        title="carepath web",
        web=WEB_PAGES,
        peer_urls=peer_urls(),
    )


def _run(
    app: Litestar | str, host: str, port: int, platform: PlatformSettings, workers: int = 1
) -> None:
    import uvicorn

    # Open event streams (live dashboards) would otherwise hold a stop forever; the
    # browsers reconnect to the next process by themselves.
    uvicorn.run(
        app,
        factory=isinstance(app, str),
        workers=workers,
        http="services.http_server:HttpToolsWithoutNagle",
        loop="uvloop",
        host=host,
        port=port,
        log_level=platform.log_level.lower(),
        log_config=None,  # its records go to the root handler configure_logging set up
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@main.command()
@click.argument("service", type=service_choice)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve this worker's Prometheus metrics on this port",
)
def worker(service: str, metrics_port: int | None) -> None:
    """Run one service's event consumer and outbox relay (distributed mode)."""
    from prometheus_client import start_http_server

    from shared.messaging import InProcessWorkers

    platform, runtime = _distributed_runtime(service)
    if metrics_port is not None:
        start_http_server(metrics_port)
    runtime.declare_consumer()
    threads = platform.worker_threads
    if runtime.spec.handle_events is not None:
        # A thread holds each event of a batch until its transaction commits.
        threads = max(threads, platform.event_batch)
    workers = InProcessWorkers(runtime.broker, threads, platform.worker_poll_ms)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runtime.relay.start()
    workers.start()
    runtime.start_background()
    click.echo(f"carepath {service} worker is consuming {service}.events", err=True)
    stopping.wait()
    runtime.relay.stop()
    workers.stop()
    runtime.close()
    runtime.broker.close()


@main.command()
@click.argument("service", type=service_choice)
def migrate(service: str) -> None:
    """Apply the service's database migrations (distributed mode; `up` does it itself)."""
    from services.registry import spec_of
    from shared.settings import load_service_settings

    platform = _platform()
    settings = load_service_settings(service, platform)
    from shared.migrations import upgrade

    upgrade(spec_of(service).migrations_dir, settings.database_url)
    click.echo(f"{service}: migrations applied", err=True)


@main.command()
@click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
@click.option("--user", "user_id", required=True, help="The user id the token names")
def token(role: str, user_id: str) -> None:
    """Print a bearer token signed with CAREPATH_JWT_SECRET."""
    from shared.tokens import issue_token

    click.echo(issue_token(_signing(), user_id, Role(role)))


@main.group("dead-letters")
def dead_letters() -> None:
    """List and replay messages that failed every retry."""


def _signing() -> Signing:
    from shared.tokens import Signing

    try:
        return Signing.from_environment()
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def _service_client(service: str) -> CarepathClient:
    from shared.client import CarepathClient
    from shared.names import peer_urls
    from shared.tokens import issue_token

    base = os.environ.get("CAREPATH_BASE_URL", "http://127.0.0.1:8000")
    url = peer_urls(default_base_url=base)[service]
    return CarepathClient(url, issue_token(_signing(), "carepath-cli", Role.admin))


@dead_letters.command("list")
@click.option("--service", required=True, type=service_choice)
@click.option("--include-replayed", is_flag=True)
def list_dead_letters(service: str, include_replayed: bool) -> None:
    with _service_client(service) as client:
        for item in client.dead_letters(include_replayed):
            replayed = f" replayed {item.replay_count}x" if item.replay_count else ""
            click.echo(
                f"{item.id}\t{item.queue_name}\t{item.event_type}\t{item.failed_at:%Y-%m-%d %H:%M}"
                f"\t{item.error}{replayed}"
            )


@dead_letters.command("replay")
@click.option("--service", required=True, type=service_choice)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter not yet replayed")
@click.argument("ids", nargs=-1, type=int)
def replay_dead_letters(service: str, replay_all: bool, ids: tuple[int, ...]) -> None:
    from shared.client import ApiProblem

    if not ids and not replay_all:
        raise click.UsageError("name dead letter ids, or pass --all")
    with _service_client(service) as client:
        chosen = [item.id for item in client.dead_letters()] if replay_all else list(ids)
        failed = 0
        for dead_letter_id in chosen:
            try:
                client.replay_dead_letter(dead_letter_id)
                click.echo(f"replayed {dead_letter_id}")
            except ApiProblem as problem:
                failed += 1
                click.echo(f"could not replay {dead_letter_id}: {problem}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.option("--service", type=click.Choice(SERVICES), help="Only this consumer [default: all]")
@click.option("--repair", is_flag=True, help="Consume what is missing, through the consume path")
def reconcile(service: str | None, repair: bool) -> None:
    """Compare every producer feed with each consumer's inbox and print what is missing,
    per consumer and event type (exit 1 if anything is still missing)."""
    import httpx

    from shared.client import ApiProblem

    unresolved = 0
    for consumer in [service] if service else SERVICES:
        with _service_client(consumer) as client:
            try:
                result = client.reconcile(repair=repair)
            except (ApiProblem, httpx.HTTPError) as error:
                click.echo(f"{consumer}: could not reconcile ({type(error).__name__})", err=True)
                unresolved += 1
                continue
        unresolved += result.unresolved
        for feed in result.feeds:
            click.echo(f"{consumer} <- {feed.producer}: {_comparison(feed)}")
    click.echo("nothing missing" if unresolved == 0 else f"{unresolved} event(s) still missing")
    if unresolved:
        sys.exit(1)


def _comparison(feed: FeedComparison) -> str:
    missing = sum(feed.missing.values())
    words = f"{feed.checked} event(s) checked, {missing} missing"
    if missing:
        by_type = ", ".join(f"{kind} {count}" for kind, count in feed.missing.items())
        words += f" ({by_type})"
    if feed.dead_lettered:
        words += f", {sum(feed.dead_lettered.values())} of them dead-lettered"
    if feed.in_flight:
        words += f", {feed.in_flight} in flight (younger than CAREPATH_CATCHUP_GRACE_S)"
    if feed.repaired or feed.failed:
        words += f"; {feed.repaired} repaired, {feed.failed} failed"
    return words


@main.group("coordinator")
def coordinator_commands() -> None:
    """The coordinator's maintenance commands."""


@coordinator_commands.command("rebuild")
@click.option("--check", is_flag=True, help="Report differences without repairing them")
def rebuild(check: bool) -> None:
    """Re-fold every pathway from the event store and report any difference from the live
    projection (exit 1 if there was one)."""
    from services.coordinator.handlers import rebuild_pathways
    from shared.db import make_engine, make_session_factory
    from shared.settings import load_service_settings

    platform = _platform()
    settings = load_service_settings("coordinator", platform)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        differing = rebuild_pathways(session, repair=not check)
    engine.dispose()
    verb = "differ" if check else "differed and were rebuilt"
    click.echo(f"{len(differing)} pathway(s) {verb}")
    for patient_id in differing:
        click.echo(str(patient_id))
    if differing:
        sys.exit(1)


@main.group("clock")
def clock_commands() -> None:
    """Show the clinic's clock, or move it for a training session or a test (never in
    production). Every process of the running system moves with it, and the
    coordinator's time rules run at once."""


@clock_commands.command("show")
def show_clock() -> None:
    with _service_client("coordinator") as client:
        _echo_clock(client.clock())


@clock_commands.command("set")
@click.argument("moment")
def set_clock(moment: str) -> None:
    """Set the clinic's time, e.g. 2027-01-04T09:00:00Z."""
    _move_clock(lambda client: client.set_clock(moment))


@clock_commands.command("advance")
@click.argument("duration")
def advance_clock(duration: str) -> None:
    """Move the clinic's time on, e.g. 3d, 36h, 2w, 1d12h."""
    _move_clock(lambda client: client.advance_clock(duration))


@clock_commands.command("reset")
def reset_clock() -> None:
    """Back to the system's time."""
    _move_clock(lambda client: client.reset_clock())


def _move_clock(move: Callable[[CarepathClient], ClockReading]) -> None:
    from shared.client import ApiProblem

    with _service_client("coordinator") as client:
        try:
            reading = move(client)
        except ApiProblem as problem:
            raise click.ClickException(str(problem)) from None
    _echo_clock(reading)


def _echo_clock(reading: ClockReading) -> None:
    from datetime import timedelta

    from shared.calendar import working_calendar

    offset = timedelta(seconds=reading.offset_seconds)
    local = working_calendar().local(reading.now)
    line = f"clinic time {local:%a %d %b %Y %H:%M %Z}"
    if offset:
        line += f" ({'+' if offset > timedelta(0) else '-'}{abs(offset)} from the system clock)"
    if not reading.movable:
        line += "; fixed: production"
    if reading.alerts_raised:
        line += f"; {reading.alerts_raised} alert(s) raised"
    click.echo(line)


if __name__ == "__main__":
    main()
