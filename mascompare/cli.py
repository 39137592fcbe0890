"""The `mascompare` command: run (Hydra, in-process), list, show, compare, view.

Bad input ends with one sentence on stderr and exit status 2, a fault during a run (disk full) with
one sentence and status 1; `HYDRA_FULL_ERROR=1` shows the traceback. A single run's config is
composed and checked here first, so that a refused command leaves nothing behind.
"""

from __future__ import annotations

import difflib
import functools
import gc
import json
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from mascompare import config as config_locations
from mascompare.errors import UserError
from mascompare.masking import is_secret_key, redact, redact_logs, secret_values
from mascompare.records import RunRecord
from mascompare.registry import unknown
from mascompare.store import incomplete

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run one task on one model under several multi-agent methods and compare them.",
)
err = Console(stderr=True, soft_wrap=True)  # one sentence stays one line

CONFIG_GROUPS = ("method", "task", "model", "backend")
API_KEY_OVERRIDE = re.compile(r"^\+{0,2}backend\.api_key=(.*)$")
SECRET_ENV_PREFIX = "MASCOMPARE_SECRET_"
USAGE_ERROR = 2
_secrets: list[str] = []  # values of secret-looking overrides, masked in everything printed


def fail(message: str, status: int = USAGE_ERROR):
    """Print one sentence (secrets masked) and exit."""
    err.print(f"[bold red]error:[/] {redact(message, _secrets)}", highlight=False, markup=True)
    raise typer.Exit(status)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"mascompare {version('mascompare')}")
        except PackageNotFoundError:
            from mascompare import __version__

            print(f"mascompare {__version__}")
        raise typer.Exit()


@app.callback()
def _options(_: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                    help="Print the version and exit.")):
    """Run one task on one model under several multi-agent methods and compare them."""


def describe(config: Traversable) -> str:
    """The first sentence of a config file's opening comment, which says what it is."""
    words: list[str] = []
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("# @package"):
            continue
        if not line.startswith("#"):
            if words:
                break
            continue
        words.append(line.lstrip("# ").strip())
    text = " ".join(w for w in words if w)
    # the first line whole, then up to the first full stop (not "e.g." or "...": one before a capital)
    end = re.compile(r"(?<![.])\.(?=\s+[A-Z]|$)").search(text, len(words[0]) - 1 if words else 0)
    return text[: end.start() + 1] if end else text


def check_overrides(overrides: list[str]) -> None:
    """Catch bad syntax and unknown group choices before Hydra starts, with "did you mean"."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for text in overrides:
        if text.startswith("-"):
            continue  # a Hydra flag such as --resolve
        try:
            (override,) = OverridesParser.create().parse_overrides([text])
        except OverrideParseException as exc:
            raise UserError(f"Cannot parse the override '{text}': {str(exc).splitlines()[0]}; "
                            "overrides look like key=value, e.g. task.limit=10.") from None
        group = override.key_or_group
        if group not in CONFIG_GROUPS or override.is_delete():
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        options = list(config_locations.group_options(group))
        for value in values:
            if not isinstance(value, str):  # e.g. backend={name: openai, api_key: ...}: never echo it
                raise UserError(f"{group}= takes the name of a preset ({', '.join(options)}), not a "
                                f"{type(value).__name__}; set its keys one by one, e.g. {group}={options[0]} "
                                f"{group}.<key>=<value>.")
            if value not in options:
                raise unknown(group, value, options)


def explain_hydra_error(exc: Exception, overrides: list[str]) -> str:
    """Turn Hydra's multi-line composition errors into one sentence."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ConfigCompositionException) and first.startswith("Could not override"):
        key = first.split("'")[1]
        cause = str(exc.__cause__).splitlines()[0] if exc.__cause__ else ""
        if "not in struct" in cause:
            nearest = nearest_key(key, _all_keys(overrides))
            if nearest:
                return f"Unknown config key '{key}'. Did you mean '{nearest}'?"
            return f"Unknown config key '{key}'; to add a new key, write '+{key}=...'."
        return f"Cannot override '{key}': {cause or first}."
    if isinstance(exc, MissingConfigException):
        return f"{first.rstrip('.')} in {' or '.join(map(str, config_locations.config_sources()))}."
    return first.rstrip(".") + "."


def nearest_key(key: str, keys: list[str]) -> str | None:
    """The real key a misspelt or misplaced one most likely means: the closest sibling (task.limt ->
    task.limit), else a key elsewhere with the same or a close last part (limit -> task.limit)."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in siblings], n=1, cutoff=0.75)
    if close:
        return f"{parent}.{close[0]}" if parent else close[0]
    shallowest = {}
    for k in sorted(keys, key=lambda k: k.count(".")):
        shallowest.setdefault(k.rpartition(".")[2], k)
    close = difflib.get_close_matches(leaf, list(shallowest), n=1, cutoff=0.75)
    return shallowest[close[0]] if close else None


def _all_keys(overrides: list[str]) -> list[str]:
    """Every key of the config composed with the user's group choices, dotted (for suggestions)."""
    from omegaconf import OmegaConf

    from mascompare.app import compose_config

    groups = [o for o in overrides if o.split("=", 1)[0] in CONFIG_GROUPS and "," not in o]
    try:
        cfg = OmegaConf.to_container(compose_config(*groups))
    except Exception:
        return []
    keys = []

    def walk(node, prefix):
        for k, v in node.items():
            keys.append(prefix + str(k))
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    walk(cfg, "")
    return keys


def precheck(overrides: list[str], multirun: bool) -> None:
    """Compose the config and check every value and the output root before Hydra creates any directory.

    In a sweep only the values shared by every job are checked here; each job checks its own.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mascompare import app as hydra_app
    from mascompare.settings import validate
    from mascompare.store import check_output_root

    given = [o for o in overrides if not o.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(given)
    fixed = [text for text, o in zip(given, parsed) if not o.is_sweep_override()] if multirun else given
    cfg = hydra_app.compose_config(*fixed)
    if not multirun:
        validate(cfg)
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    check_added_keys(cfg, [o.key_or_group for o in parsed if o.is_add() or o.is_force_add()], swept)
    if multirun:
        check_sweep_dir(given, parsed)
    if isinstance(cfg.run.get("output_root"), str):
        hydra_app.existing_before = str(check_output_root(cfg.run.output_root))


def check_sweep_dir(given: list[str], parsed) -> None:
    """A sweep given the folder of another sweep (hydra.sweep.dir) would overwrite its multirun.yaml and mark its
    jobs failed: refuse it before Hydra writes anything. The same sweep again resumes it."""
    import yaml

    chosen = [o.value() for o in parsed if o.key_or_group == "hydra.sweep.dir"]
    if not chosen or not isinstance(chosen[-1], str) or "${" in chosen[-1]:
        return  # the sweep's own name (its overrides' hash) cannot meet another sweep's
    saved = Path(chosen[-1]).expanduser() / "multirun.yaml"
    try:
        theirs = ((yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("hydra") or {})["overrides"]["task"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return  # no sweep there, or not one of ours
    ours = [(text, o) for text, o in zip(given, parsed) if not o.key_or_group.startswith("hydra.")]
    if [str(o) for o in theirs or []] != [text for text, _ in ours] and not runs_kept(saved.parent, [o for _, o in ours]):
        shown = " ".join(redact(str(o), _secrets) for o in theirs or [])
        raise UserError(f"hydra.sweep.dir={chosen[-1]} holds another sweep ({shown}); give this sweep a folder of "
                        "its own, or run that sweep's own command to resume it.")


def runs_kept(sweep_dir: Path, parsed) -> bool:
    """Whether every job folder of the sweep in `sweep_dir` that holds a run gets the same overrides from this
    sweep: then this sweep amends that one (e.g. a failed job's bad value fixed) and hides none of its runs."""
    import yaml
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    from mascompare.masking import mask_override

    try:
        (jobs,) = BasicSweeper.split_arguments(parsed, None)
    except HydraException:  # a sweep BasicSweeper does not expand (e.g. a range for Optuna): another sweep
        return False
    for run_json in sweep_dir.glob("*/run.json"):
        try:
            saved = yaml.safe_load((run_json.parent / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
            index = int(run_json.parent.name)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
            return False
        if index >= len(jobs) or [mask_override(o) for o in jobs[index]] != saved:
            return False
    return True


def check_added_keys(cfg, added: list[str], swept: set[str]) -> None:
    """A key added with + that its section does not read would be ignored without a word: refuse it."""
    from mascompare.settings import unread_key

    for key in added:
        section = key.split(".", 1)[0]
        if key.startswith("hydra.") or section in swept:  # a swept section's schema is each job's
            continue
        problem = unread_key(cfg, key)
        if problem:
            raise UserError(problem)


def launch_hydra(argv: list[str], multirun: bool = False, check: bool = True) -> None:
    """Check the config, then call the @hydra.main app in this process with argv as its command line."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from mascompare.app import SIGNAL_EXIT, StopRun, Terminated, main

    def terminate(signum, frame):
        raise Terminated()

    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    saved_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = argv
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us, so we can state them in one sentence
    try:
        signal.signal(signal.SIGTERM, terminate)  # stops the run as Ctrl-C does: run.json says why
        with quiet_hydra_banner():
            if check:
                precheck(argv[1:], multirun)
            main()
    except (StopRun, UserError, HydraException) as exc:
        if user_wants_traceback:
            raise exc.__cause__ if isinstance(exc, StopRun) and exc.__cause__ else exc
        if isinstance(exc, StopRun) and exc.code in SIGNAL_EXIT.values():
            saved_handlers.clear()  # the process ends: stop_now's own handlers stay
            stop_now(f"stopped: {exc.message}", exc.code)
        if isinstance(exc, StopRun):
            fail(exc.message, exc.code)
        if isinstance(exc, UserError):
            fail(str(exc), exc.status)
        fail(explain_hydra_error(exc, argv[1:]))
    except KeyboardInterrupt as exc:  # before or after the run itself (e.g. while Hydra composes)
        saved_handlers.clear()
        stop_now("stopped: interrupted before the run began; nothing was written." if not isinstance(exc, Terminated)
                 else "stopped: terminated (SIGTERM) before the run began; nothing was written.",
                 SIGNAL_EXIT[getattr(exc, "signal_name", "SIGINT")])
    except Exception as exc:
        if user_wants_traceback:
            raise
        fail(f"{type(exc).__name__}: {exc} (set HYDRA_FULL_ERROR=1 for the traceback)", 1)
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)
        GlobalHydra.instance().clear()


def stop_now(message: str, status: int):
    """End a run stopped by a signal: its stop is recorded; say so and exit without waiting for threads that are
    still blocked (e.g. a request to a server that does not answer, which nothing can interrupt). A further
    Ctrl-C or SIGTERM meanwhile is ignored: it would cut the exit short with Python's own status and message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    err.print(redact(message, _secrets), highlight=False, markup=False)
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:
        import logging

        logging.shutdown()  # run.log whole
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    raise typer.Exit(status)


HYDRA_BANNER = "Error executing job with overrides:"


@contextmanager
def quiet_hydra_banner():
    """Hydra writes "Error executing job with overrides: [...]" before re-raising a failed job's error; the error
    itself is reported in one sentence, so the banner is left out."""
    real = sys.stderr

    class Filtered:
        def write(self, text):
            return len(text) if text.startswith(HYDRA_BANNER) else real.write(text)

        def __getattr__(self, name):
            return getattr(real, name)

    sys.stderr = Filtered()
    try:
        yield
    finally:
        sys.stderr = real


def hide_secrets(overrides: list[str]) -> list[str]:
    """Keep secrets out of the config's text: backend.api_key goes to the backend through OPENAI_API_KEY, and
    any other secret-looking key (`+backend.token=...`) through an environment variable the config reads.

    Hydra writes and logs overrides as typed; this way they hold `${oc.env:...}`, never the secret.
    """
    _secrets.extend(secret_values(overrides))
    redact_logs(_secrets)
    kept = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if API_KEY_OVERRIDE.match(text):
            os.environ["OPENAI_API_KEY"] = API_KEY_OVERRIDE.match(text).group(1)
            err.print("[bold yellow]warning:[/] backend.api_key on the command line is visible to every local user "
                      "(ps); use $OPENAI_API_KEY or backend.api_key_file=PATH instead.", highlight=False)
        elif sep and is_secret_key(key) and not value.startswith("${") and not key.startswith("hydra."):
            variable = f"{SECRET_ENV_PREFIX}{len(kept)}"
            os.environ[variable] = value
            kept.append(f"{key}=${{oc.env:{variable}}}")
        else:
            kept.append(text)
    return kept


CONFIG_DIRS = typer.Option(
    None, "--config-dir", envvar=config_locations.USER_CONFIG_ENV,
    help="A folder of your own configs laid out like the shipped ones (task/, model/, method/, experiment/, ...): "
         "adds its presets, tasks and experiments. Repeatable.")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "--multirun", "-m", help="Sweep: run every combination of comma lists."),
    cfg: str = typer.Option(None, "--cfg", "-c", help="Print the config instead of running: job, hydra or all."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count requests, tokens and cost; call no model."),
    config_dirs: list[Path] = CONFIG_DIRS,
):
    """Run one configuration, e.g. `mascompare run method=baseline task=arith task.limit=20`.

    Arguments are Hydra overrides (key=value); `mascompare list` shows the choices.
    """
    overrides = hide_secrets(list(ctx.args))
    ctx.with_resource(config_locations.using_config_dirs(config_dirs))
    try:
        search_path = config_locations.search_path_overrides()
        if search_path and any(o.startswith("hydra.searchpath=") for o in overrides):
            raise UserError("Give your config folders with --config-dir (or MASCOMPARE_CONFIG_DIR) or with "
                            "hydra.searchpath, not both.")
        check_overrides(overrides)
    except UserError as exc:
        fail(str(exc), exc.status)
    argv = ["mascompare", *overrides, *search_path]
    if dry_run:  # and leave no files behind: no log file
        argv += ["run.dry_run=true", "hydra.job_logging.root.handlers=[console]"]
    if multirun:
        argv.append("--multirun")
    if cfg:
        argv += ["--cfg", cfg]
    launch_hydra(argv, multirun, check=not cfg)


@app.command("list")
def list_choices(ctx: typer.Context, config_dirs: list[Path] = CONFIG_DIRS):
    """List the methods, tasks, model presets, backends and experiments that `run` accepts."""
    import yaml

    ctx.with_resource(config_locations.using_config_dirs(config_dirs))
    try:
        shipped, *yours = config_locations.config_sources()
    except UserError as exc:
        fail(str(exc), exc.status)
    defaults = {}
    for item in yaml.safe_load(shipped.joinpath("config.yaml").read_text(encoding="utf-8"))["defaults"]:
        if isinstance(item, dict):
            defaults.update({k: v for k, v in item.items() if k in CONFIG_GROUPS})
    console = Console()
    console.print(f"configs: {shipped}" + "".join(f"; yours: {d}" for d in yours),
                  markup=False, highlight=False, soft_wrap=True)
    for group, title in (*((g, f"{g}=") for g in CONFIG_GROUPS), ("experiment", "+experiment=")):
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column(style="bold cyan")
        table.add_column()
        for name, config in config_locations.group_options(group).items():
            mine = any(isinstance(config, Path) and config.is_relative_to(d) for d in yours)
            mark = " (default)" if defaults.get(group) == name else " (yours)" if mine else ""
            table.add_row(name + mark, describe(config))
        console.print(table)


def read_run_json(run_dir: Path) -> RunRecord:
    """A run directory's run.json, or one sentence saying why it cannot be shown."""
    from mascompare.records import DamagedRecord
    from mascompare.store import RUN_FILE, read_run

    path = run_dir / RUN_FILE
    if run_dir.is_file():
        raise UserError(f"{run_dir} is a file; give the run directory that holds run.json, e.g. {run_dir.parent}.")
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory: it has no run.json.")
    try:
        record = read_run(run_dir)
    except DamagedRecord as problem:
        raise UserError(f"{path} is not a complete record of a run ({problem}); run its command again to rewrite "
                        "it.") from None
    missing = incomplete(record)
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}, so it is not a complete record of a run; "
                        "run its command again to rewrite it.")
    return record


@app.command()
def show(run_dir: Path = typer.Argument(..., help="A run directory (holds run.json)."),
         as_json: bool = typer.Option(False, "--json", help="Print run.json's status and summary as JSON.")):
    """Print the summary of a run."""
    from mascompare.display import print_summary, problem_rows
    from mascompare.store import read_samples, set_aside_lines

    try:
        record = read_run_json(run_dir)
        samples = read_samples(run_dir, running=record.status == "running")
    except UserError as exc:
        fail(str(exc), exc.status)
    if as_json:
        keys = ("status", "stop_reason", "task", "method", "model", "backend", "run_dir", "config_hash",
                "started", "finished", "samples_total", "summary", "method_info")
        shown = record.to_json()
        print(json.dumps({k: shown[k] for k in keys}, indent=2, default=str))
        return
    print_summary(record, problem_rows(list(samples.latest.values()), samples.damaged, set_aside_lines(run_dir)))


COMPARE_PATHS = typer.Argument(..., help="Run directories, a results root or a multirun directory.")
REFERENCE_OPTION = typer.Option(
    None, "--reference", "-r",
    help="Method the others are measured against (default: text_mas when present, else baseline); "
         "narrow it with config values: pruned_mas:method.prune_rate=0.")
BY_OPTION = typer.Option(None, "--by", help="Config key shown as a column, e.g. method.latent_steps (repeatable).")
METRIC_OPTION = typer.Option("flexible", "--metric",
                             help="Accuracy for the paired statistics and the plot: strict or flexible.")


@contextmanager
def many_records():
    """Python's cycle collector paused while a command reads many runs' records and compares them, and kept off
    them afterwards. The records hold no cycles, so it would find nothing, yet it walks every object still alive
    again and again as they pile up (a fifth of compare's time on 2000 runs, bench/compare_scale.py); and once
    enabled again it would walk them all twice more as they age. gc.freeze sets what is alive apart from its
    walks for the rest of the process, which a command ends; refcounting still frees the records."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if paused:
            gc.enable()


def comparison_of(command: str, paths: list[Path], reference: str | None, by: list[str] | None, metric: str,
                  for_view: bool = False):
    """The comparison of every run under paths, or one sentence saying why there is none; for_view: its page
    will be written (see report.collect)."""
    from mascompare import report

    files = [p for p in paths if p.is_file()]
    if files:
        raise UserError(f"{files[0]} is a file; {command} takes run directories, a results root or a multirun "
                        f"directory, e.g. {files[0].parent}.")
    read_view = None
    if for_view:
        from mascompare.view.records import read_run

        read_view = functools.partial(read_run, questions={})  # a question's text, once found, serves every run
    return report.compare(report.collect(paths, read_view), reference, by or (), metric)


def output_dir(paths: list[Path], out: Path | None) -> Path:
    """--out, else the one path, or the deepest folder holding all paths."""
    return out or Path(os.path.commonpath([str(p.resolve()) for p in paths]))


def writable_output(paths: list[Path], out: Path | None) -> Path:
    """output_dir, refused in one sentence where the files could not be written there."""
    from mascompare.store import check_writable

    if out is not None:
        check_writable(out, "--out", "where the comparison's files go")
        return out
    for path in paths:
        if path.is_file():
            raise UserError(f"{path} is a file; compare takes run directories, a results root or a multirun "
                            f"directory, e.g. {path.parent}.")
        if not path.exists():
            raise UserError(f"{path} does not exist; give run directories, a results root or a multirun directory.")
    target = output_dir(paths, None)
    try:
        check_writable(target, "--out")
    except UserError:
        raise UserError(f"compare writes its files into {target}, which cannot be written (read-only or full); "
                        "give --out with a writable folder.") from None
    return target


@app.command()
def compare(
    paths: list[Path] = COMPARE_PATHS,
    reference: str = REFERENCE_OPTION,
    by: list[str] = BY_OPTION,
    metric: str = METRIC_OPTION,
    out: Path = typer.Option(None, "--out", "-o",
                             help="Where comparison.{md,csv,tex}, pareto.png and view.html go (default: the one "
                                  "PATH, or the deepest folder holding all PATHs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison table as JSON (one object per run) "
                                                       "and write no files."),
    no_html: bool = typer.Option(False, "--no-html", help="Do not write view.html (see `mascompare view`)."),
):
    """Compare runs side by side: accuracy, tokens, time and cost, with paired statistics against a reference."""
    from mascompare import report

    try:
        target = None if as_json else writable_output(paths, out)  # before anything is computed or printed
        with many_records():
            comparison = comparison_of("compare", paths, reference, by, metric, for_view=not (as_json or no_html))
    except UserError as exc:
        fail(str(exc), exc.status)
    if as_json:  # for scripts: the table on stdout, nothing written
        print(comparison.table.drop(columns=["run"], errors="ignore").to_json(orient="records", indent=2))
        return
    report.render(comparison, Console())
    written = report.write(comparison, target)
    if not no_html:
        from mascompare import view as viewer

        written.append(viewer.write(comparison, target, (target / "pareto.png").read_bytes()))
    err.print(f"wrote {', '.join(p.name for p in written)} to {target}", highlight=False, soft_wrap=True)


@app.command()
def view(
    paths: list[Path] = COMPARE_PATHS,
    reference: str = REFERENCE_OPTION,
    by: list[str] = BY_OPTION,
    metric: str = METRIC_OPTION,
    out: Path = typer.Option(None, "--out", "-o",
                             help="Where view.html goes (default: where compare writes comparison.md)."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
):
    """Write view.html: the comparison, every question with each method's answer, and every agent call
    of a question side by side; one file that opens in any browser without a server."""
    from mascompare import view as viewer

    try:
        with many_records():
            comparison = comparison_of("view", paths, reference, by, metric, for_view=True)
    except UserError as exc:
        fail(str(exc), exc.status)
    path = viewer.write(comparison, output_dir(paths, out))
    print(path)
    if open_page:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            err.print("[bold yellow]warning:[/] no browser could be started here; open the file above in one.",
                      highlight=False)


if __name__ == "__main__":
    app()
