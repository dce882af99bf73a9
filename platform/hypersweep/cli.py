"""Command line: argument parsing and printing only. ``ConfigError`` becomes one line and exit 2;
anything else unexpected is a crash: one line naming it and its traceback's file, exit 3."""

from __future__ import annotations

import gc
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from hypersweep.errors import ConfigError, first_line, write_crash_report
from hypersweep.redaction import redact

# A contract (README): scripts tell no result from bad input and from a crash (a bug) by these alone.
EXIT_OK, EXIT_NO_VALID_TRIAL, EXIT_BAD_INPUT, EXIT_CRASH, EXIT_UNSENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = f"""\b
Exit codes:
  {EXIT_OK}    done: the sweep finished with a best trial
  {EXIT_NO_VALID_TRIAL}    the sweep ran, but no trial produced a valid result (all failed or diverged)
  {EXIT_BAD_INPUT}    bad input: one line 'error: <file>: <key.path>: <what is wrong>', nothing started
  {EXIT_CRASH}    hypersweep itself crashed: one line naming the error and the file holding its traceback
  {EXIT_UNSENT}    the trials ended, but the tracking server did not take all of it: the rest is kept in
       the sweep's folder; hypersweep resume SWEEP sends it (the sweep is finished then)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): continue with hypersweep resume SWEEP"""
_out = Console(highlight=False, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(package_name="hypersweep")
def cli() -> None:
    """hypersweep: hyperparameter sweeps of PyTorch models (Ray Tune, Optuna, ASHA, MLflow)."""


def _sweep_options(fn: Any) -> Any:
    options = [
        click.option("--num-samples", type=int, help="Trials to run."),
        click.option("--max-epochs", type=int, help="Epochs per trial at most (ASHA's max_t)."),
        click.option(
            "--scheduler",
            type=click.Choice(["asha", "hyperband", "median", "fifo", "pbt", "pb2"]),
            help="fifo: no early stopping; pbt, pb2: population-based training.",
        ),
        click.option("--search", type=click.Choice(["optuna", "random"]), help="Optuna TPE or random."),
        click.option("--cpus-per-trial", type=float),
        click.option("--gpus-per-trial", type=float, help="Fractional GPUs allowed (0.25 = 4 per GPU)."),
        click.option("--max-concurrent", type=int, help="Trials at once (default: as many as fit)."),
        click.option(
            "--tracking-uri",
            help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db).",
        ),
        click.option(
            "--storage",
            help="Where Tune keeps trial state (path or URI; default ./hypersweep_runs).",
        ),
        click.option(
            "--shared-storage",
            is_flag=True,
            default=None,
            help="--storage is a path every cluster node mounts (NFS); required for a path on >1 node.",
        ),
        click.option("--seed", type=int, help="Seed of the sampler, data split and initialisation."),
        click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override any sweep key."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return click.argument("sweep_file", type=click.Path(dir_okay=False))(fn)


def _load(sweep_file: str, overrides: Sequence[str], flags: dict[str, Any]) -> Any:
    from hypersweep.registry import check_experiment

    spec = _read(sweep_file, overrides, flags)
    check_experiment(spec)
    return spec


# The sweep flags (click's parameter names) and the sweep keys they set.
_FLAG_KEYS = {
    "num_samples": "num_samples",
    "max_epochs": "max_epochs",
    "scheduler": "scheduler.type",
    "search": "search.type",
    "seed": "search.seed",
    "cpus_per_trial": "resources.cpus_per_trial",
    "gpus_per_trial": "resources.gpus_per_trial",
    "max_concurrent": "resources.max_concurrent",
    "tracking_uri": "tracking_uri",
    "storage": "storage",
    "shared_storage": "storage_shared",
}
# Sweep key -> the command-line argument that set it: an error about that key says so, since
# the line names the sweep file, which may not hold the value at fault.
_given: dict[str, str] = {}


def _read(sweep_file: str, overrides: Sequence[str], flags: dict[str, Any]) -> Any:
    """The sweep file, flags and overrides, checked against the schema: no torch imported yet."""
    from hypersweep.config import load_sweep

    values = {key: flags.get(name) for name, key in _FLAG_KEYS.items()}
    for item in overrides:
        _given[item.partition("=")[0].strip()] = f"--set {item}"
    for name, key in _FLAG_KEYS.items():
        value = flags.get(name)
        if value is not None:
            shown = "" if value is True else f" {value:g}" if isinstance(value, float) else f" {value}"
            _given[key] = f"--{name.replace('_', '-')}{shown}"
    notes: list[str] = []
    spec = load_sweep(sweep_file, overrides, values, notes)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return spec


def _origin(key: str) -> str:
    """' (from --num-samples 0)' when the command line set the key an error names, a key
    inside it or the setting it belongs to; '' otherwise."""
    if not key:
        return ""
    args = [a for k, a in _given.items() if k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.")]
    return f" (from {', '.join(args)})" if args else ""


@cli.command(epilog=EXIT_CODES)
@_sweep_options
@click.option("--address", help="Ray cluster address (default: start Ray on this machine).")
def run(sweep_file: str, overrides: tuple[str, ...], address: str | None, **flags: Any) -> None:
    """Run the sweep in SWEEP_FILE."""
    spec = _read(sweep_file, overrides, flags)
    # Local Ray takes seconds to start, and so do the imports of torch, Ray Tune and MLflow
    # here: its node starts first, in a process of its own, and both go on at once.
    node = _sweep_node(spec, None) if address is None else None
    try:
        from hypersweep.console import Progress
        from hypersweep.registry import check_experiment
        from hypersweep.tuning import run_sweep

        check_experiment(spec)
        how = f"{spec.search.type} search, {spec.scheduler.type} scheduler"
        if spec.mutations:  # PBT samples its population at random and has no searcher
            how = f"random population, {spec.scheduler.type} mutating {', '.join(spec.mutations)}"
        _out.print(f"sweep [bold]{spec.name}[/]: {spec.num_samples} trials x {spec.max_epochs} epochs, {how}")
        with Progress(total=spec.num_samples, metric=spec.metric, mode=spec.mode) as progress:
            outcome = run_sweep(spec, address=address, progress=progress, node=node)
    finally:
        if node is not None:
            node.stop()  # the sweep has stopped it, unless it never started
    _end(spec, outcome)


def _sweep_node(spec: Any, roots: list[str] | None) -> Any:
    """The local node for ``spec``, started now; ``roots``: the import roots (None: the sweep file's)."""
    from hypersweep.config import import_roots
    from hypersweep.ray_node import sweep_node

    return sweep_node(spec, import_roots(spec.source) if roots is None else roots)


@cli.command(epilog=EXIT_CODES)
@click.argument("sweep")
@click.option(
    "--storage",
    help="The sweep's --storage when SWEEP is an id (default ./hypersweep_runs); a storage URI"
    " also gives back credentials the sweep's manifest left out.",
)
@click.option("--tracking-uri", help="MLflow tracking URI (default: the one the sweep used).")
@click.option("--address", help="Ray cluster address (default: the one the sweep used).")
def resume(sweep: str, storage: str | None, tracking_uri: str | None, address: str | None) -> None:
    """Finish an interrupted sweep: SWEEP is its folder or its sweep id."""
    from hypersweep.manifest import read_manifest, spec_of, trials_of

    folder, manifest = read_manifest(sweep, storage=storage)  # refuse anything else before starting Ray
    if manifest.get("finished"):
        _out.print(f"sweep {manifest['sweep_id']} finished already: nothing to resume")
        return  # exit 0: it is done, and its end is recorded once
    trials = trials_of(folder, manifest, storage)
    spec = spec_of(manifest)
    # As for `run`: local Ray starts while this process imports torch, Ray Tune and MLflow.
    local = (address or manifest.get("address")) is None
    node = _sweep_node(spec, list(manifest["roots"])) if local else None
    try:
        from hypersweep.console import Progress
        from hypersweep.tuning import check_resumable, resume_sweep

        check_resumable(trials)
        _out.print(f"resuming sweep {manifest['sweep_id']} in {folder}")
        with Progress(total=spec.num_samples, metric=spec.metric, mode=spec.mode) as progress:
            outcome = resume_sweep(
                folder,
                manifest,
                tracking_uri=tracking_uri,
                address=address,
                progress=progress,
                node=node,
                storage=storage,
            )
    finally:
        if node is not None:
            node.stop()  # the sweep has stopped it, unless it never started
    _end(spec, outcome)


def _end(spec: Any, outcome: Any) -> None:
    """The summary, then exit: 130 interrupted, 4 writes unsent, 1 no valid trial, 0 otherwise
    (run and resume)."""
    if outcome.interrupted:
        if outcome.tune_log:
            click.echo(outcome.tune_log, err=True)
        click.echo(
            f"interrupted: {sum(outcome.statuses.values())}/{spec.num_samples} trials finished; "
            f"continue with: hypersweep resume {outcome.folder}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    from hypersweep.console import print_outcome

    print_outcome(_out, spec, outcome)
    if outcome.unsent:
        click.echo(
            f"warning: the tracking server did not answer ({outcome.tracking_error}); "
            f"{outcome.unsent} writes are kept in {outcome.folder}: "
            f"send them with: hypersweep resume {outcome.folder}",
            err=True,
        )
        sys.exit(EXIT_UNSENT)
    sys.exit(EXIT_NO_VALID_TRIAL if outcome.failed else EXIT_OK)


@cli.command()
@_sweep_options
@click.option("--address", help="Ray cluster address to check against (default: this machine).")
def validate(sweep_file: str, overrides: tuple[str, ...], address: str | None, **flags: Any) -> None:
    """Check SWEEP_FILE (schema, search space, experiment, its data, its model, its resources)
    without starting anything: no Ray node, no tracking store. With --address, the running
    cluster is joined for a moment to read its nodes."""
    from hypersweep import cluster
    from hypersweep.config import import_roots
    from hypersweep.manifest import check_storage_path
    from hypersweep.registry import load_sweep_data
    from hypersweep.tracking import check_tracking_uri, resolve_tracking_uri
    from hypersweep.warm_start import validate as check_warm_start

    spec = _load(sweep_file, overrides, flags)
    source = str(spec.source)
    uri = resolve_tracking_uri(spec.tracking_uri)
    check_tracking_uri(uri, source=source)
    warm = check_warm_start(spec, tracking_uri=uri)
    check_storage_path(spec.storage, source=source)
    load_sweep_data(spec, import_roots(spec.source))  # the data loads, the model builds
    info = cluster.probe(address)
    cluster.check_resources(spec.resources, info, source=source)
    cluster.check_storage(spec.storage, shared=spec.storage_shared, info=info, source=source)
    where = "this machine" if address is None else f"{info.nodes} node(s) at {address}"
    _out.print(
        f"ok: {sweep_file}: {spec.name}, {len(spec.search_space.names)} parameters "
        f"({', '.join(spec.search_space.names)}), experiment {spec.experiment}; "
        f"{cluster.concurrency(spec.resources, info)} trial(s) at once on {where} "
        f"({info.cpus:g} CPU, {info.gpus:g} GPU)"
        + (f"; {warm}" if warm else "")
        + (f"; {spec.scheduler.type} mutating {', '.join(spec.mutations)}" if spec.mutations else "")
    )


@cli.command()
@click.argument("sweep")
@click.option(
    "--tracking-uri",
    help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db).",
)
def best(sweep: str, tracking_uri: str | None) -> None:
    """Best trial of SWEEP (a sweep id, or a sweep name for its latest run)."""
    from hypersweep.tracking import find_best, resolve_tracking_uri

    summary = find_best(sweep, tracking_uri=resolve_tracking_uri(tracking_uri))
    _out.print(f"sweep {summary.sweep_id} (parent run {summary.parent_run_id})")
    _out.print(f"best trial {summary.trial_id}: {summary.metric} = {summary.value:.5g}")
    _out.print(f"MLflow run id: {summary.run_id}")
    for key, value in sorted(summary.config.items()):
        _out.print(f"  {key}: {value}")
    if summary.population_based:
        _out.print(
            "  (its first configuration: population-based training changed it while it trained; "
            "the parent run's best_config.json holds its last, best_schedule.json every epoch's)"
        )


@cli.command()
@click.argument("sweep")
@click.option(
    "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
)
@click.option(
    "--scheduler", default="asha,fifo", show_default=True, help="Comma-separated: asha,hyperband,median,fifo."
)
@click.option("--grace-period", help="Comma-separated epochs (default: the sweep's).")
@click.option("--reduction-factor", help="Comma-separated factors (default: the sweep's).")
@click.option("--search", help="Comma-separated: optuna,random (default: the sweep's).")
@click.option("--num-samples", type=click.IntRange(1), help="Trials per replay (default: the sweep's).")
@click.option("--seeds", type=click.IntRange(1), default=5, show_default=True, help="Replays per setting.")
def replay(sweep: str, tracking_uri: str | None, seeds: int, **grid: Any) -> None:
    """What other scheduler and search settings would have done on SWEEP, a finished sweep in
    MLflow: replayed on its recorded learning curves in simulated time, in seconds."""
    from hypersweep.console import replay_table
    from hypersweep.replay import Table, compare, settings_from_flags
    from hypersweep.tracking import resolve_tracking_uri
    from hypersweep.tracking.curves import read_table

    data = read_table(sweep, tracking_uri=resolve_tracking_uri(tracking_uri))
    table = Table.from_json(data)
    outcomes = compare(table, settings_from_flags(data, table, grid), seeds)
    cut = sum(curve.cut for curve in table.curves)
    _out.print(
        f"sweep {data['sweep']}: {len(table.curves)} trials recorded, {cut} cut short by its scheduler; "
        f"its best {table.metric} {table.best():.4g}"
    )
    _out.print(replay_table(data, outcomes, seeds=seeds))
    if any(o.guessed for o in outcomes):
        _out.print(
            "not exact: k/n: in k of the n replays a trial would have trained past where the recorded "
            "sweep's scheduler stopped it, and its later epochs are unknown; a FIFO sweep replays every "
            "setting exactly"
        )


@cli.command()
@click.argument("sweep")
@click.option(
    "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write it into this folder, not to the parent run."
)
def report(sweep: str, tracking_uri: str | None, out: Path | None) -> None:
    """(Re)build the report of SWEEP (a sweep id, or a sweep name for its latest run) from MLflow
    alone and log it to the sweep's parent run: report/report.html, its charts, its metrics."""
    from hypersweep.console import print_report
    from hypersweep.report import rebuild
    from hypersweep.tracking import resolve_tracking_uri

    print_report(_out, rebuild(sweep, tracking_uri=resolve_tracking_uri(tracking_uri), out=out))


@cli.command()
@click.option(
    "--tracking-uri",
    help="Backend store to show (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Bind address; anything but loopback exposes the UI.",
)
def ui(tracking_uri: str | None, port: int, host: str) -> None:
    """Open the MLflow UI on 127.0.0.1 to compare the runs."""
    from hypersweep.tracking import redact, require_existing_store, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    require_existing_store(uri)  # MLflow would show an empty store it made
    _check_port_free(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        Console(stderr=True).print(
            f"[yellow]warning: the MLflow UI on {host} is reachable by anyone who can reach this machine[/]"
        )
    _out.print(f"MLflow UI for {redact(uri)}: http://{host}:{port}")
    args = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    os.execv(sys.executable, args)


def _check_port_free(host: str, port: int) -> None:
    """The UI's server would print a traceback and exit 0 on a port it cannot bind."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            probe.bind(infos[0][4])
    except OSError as exc:
        raise ConfigError("", "--port", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: bad input is one line on stderr and exit 2, never a traceback; a crash is one
    line and exit 3, its traceback in a file.

    ``argv`` None: the process's own command line, which ends with the command.
    """
    try:
        _dispatch(argv)
    finally:
        if argv is None:
            _skip_final_collections()


def _skip_final_collections() -> None:
    """Spare the process's exit a walk over everything torch, Ray and MLflow allocated.

    At exit Python collects garbage over every object still alive, then again while it clears
    the modules: after a sweep that took 1.7-2.5 s of CPU between the summary and the shell
    prompt. Frozen objects are left out of those collections. Exit handlers still run and what
    is still referenced is torn down as before; only cyclic garbage made before this point is
    left to the operating system (the command has closed what it wrote by then).
    """
    gc.freeze()


def _dispatch(argv: Sequence[str] | None) -> None:
    _given.clear()  # main() may run several commands in one process (tests, scripts)
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except ConfigError as exc:
        click.echo(exc.line() + _origin(exc.key), err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as exc:  # a usage error, or a file click could not open
        click.echo(f"error: command line: {exc.format_message()}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug or an environment nothing checked: never a silent exit 1
        _crashed(exc)


def _crashed(exc: Exception) -> None:
    """One line naming the error and where its traceback is (the sweep's folder when it happened
    during a sweep); then exit 3."""
    where = write_crash_report(exc)
    what = type(exc).__name__ + (f": {redact(first_line(exc))}" if str(exc).strip() else "")
    click.echo(f"error: hypersweep crashed: {what} (traceback: {where})", err=True)
    sys.exit(EXIT_CRASH)
