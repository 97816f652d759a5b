"""The command line's frame: the ``main`` group every command module registers with, the shared
options, and the one place where a user error becomes one ``Error:`` line (:class:`_Commands`).
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .._version import __version__
from ..config import Config, load_config
from ..errors import SparsebridgeError, SparsebridgeWarning

MAX_LISTED_FAILURES = 20
SAMPLE_TEXTS = (
    "Learned sparse retrieval expands a query into weighted vocabulary terms.",
    "The wing was tested in a wind tunnel at supersonic speed.",
    "json.dumps serializes a Python object to a JSON formatted string.",
    "Where can I find a good pizza restaurant near the train station?",
)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
# Every error we raise on purpose, and the OS errors a user causes (a path that is not there).
USER_ERRORS: tuple[type[BaseException], ...] = (SparsebridgeError, FileNotFoundError, PermissionError)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe to print: a lone surrogate (from a JSON ``"\\udc80"`` escape) becomes that escape
    instead of a UnicodeEncodeError in the middle of a report."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return printable(" ".join(text.split()))


class _Commands(click.Group):
    """The command group. Its ``invoke`` is the one place where user errors become one ``Error:``
    line (exit 1) and Ctrl-C becomes exit status 130, for every command, present and future."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            _one_line_warnings()
            try:
                return super().invoke(ctx)
            except USER_ERRORS as exc:
                raise click.ClickException(_one_line(exc)) from None
            except KeyboardInterrupt:
                click.echo("Error: interrupted", err=True)
                raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _one_line_warnings() -> None:
    # Our own warnings as one "Warning:" line, without the file name and source line Python adds.
    default = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, SparsebridgeWarning):
            click.echo(f"Warning: {printable(str(message))}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one ``Error:`` line; the group already does it for every command, this
    is for a command used on its own (``ingest.main(...)``) or outside the group."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(_one_line(exc)) from None

    return wrapper


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config`` and ``--json`` (every command takes them) and the one-line error handling."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)
    fn = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="TOML config (default: $SPARSEBRIDGE_CONFIG, else ./sparsebridge.toml, else built-in defaults).",
    )(fn)
    return fn


def progress_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--quiet`` / ``-q``: no progress bar."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(fn)


def index_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--index``, which overrides ``[backend] index``."""
    return click.option("--index", default=None, help="Index name (overrides [backend] index).")(fn)


def model_change_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--allow-model-change`` (write into / search an index built by another model)."""
    return click.option(
        "--allow-model-change",
        is_flag=True,
        default=None,
        help="Use an index built by another model (weights, pooling, max_active_dims, query side) "
        "([ingest] allow_model_change).",
    )(fn)


@dataclass(frozen=True)
class IndexCommand:
    """What :func:`index_command_options` read: the config (``--config``, with ``--index`` and
    ``--allow-model-change`` applied), ``--json`` and ``--quiet``."""

    config: Config
    as_json: bool
    quiet: bool


def index_command_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a command that works on the configured index with the model (ingest, search,
    eval): ``--index``, ``--allow-model-change``, ``--config``, ``--json`` and ``--quiet``, handed
    to the command as one :class:`IndexCommand` (keyword ``cmd``)."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        index: str | None,
        allow_model_change: bool | None,
        config_path: Path | None,
        as_json: bool,
        quiet: bool,
        **kwargs: Any,
    ) -> Any:
        config = _config(config_path, index=index)
        if allow_model_change:
            config.ingest.allow_model_change = True
        return fn(*args, cmd=IndexCommand(config, as_json, quiet), **kwargs)

    for option in (progress_option, common_options, model_change_option, index_option):
        command = option(command)
    return command


def _config(path: Path | None, *, check_connector: bool = True, index: str | None = None) -> Config:
    config = load_config(path, check_connector=check_connector)
    if index:
        config.backend.index = index
    return config


def _quiet_libraries() -> None:
    # The CLI prints its own progress; the model loaders' bars and warnings are noise here.
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except (ImportError, AttributeError):  # pragma: no cover - optional
        pass


def _pipeline(config: Config, quiet: bool, cache: Any = None, *, queries_only: bool = False) -> Any:
    from ..config.builder import connector_from_config

    # The backend is checked before torch and the models load: an unreachable one fails in a second.
    connector = connector_from_config(config)
    try:
        connector.check()
        from ..index.pipeline import Pipeline

        if not queries_only:  # it imports transformers, which a query-only search may not need
            _quiet_libraries()
        return Pipeline.from_config(
            config, connector=connector, show_progress=not quiet, cache=cache, queries_only=queries_only
        )
    except BaseException:
        connector.close()
        raise


def _open_cache(no_cache: bool, path: Path | None) -> Any:
    """The encode cache an ingest uses (None with --no-cache)."""
    if no_cache:
        return None
    from ..vectors.cache import EncodeCache

    return EncodeCache(path)


def cache_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--no-cache`` and ``--cache FILE`` (the encode cache a text ingest uses)."""
    fn = click.option("--no-cache", is_flag=True, help="Encode everything; neither read nor fill the encode cache.")(fn)
    fn = click.option(
        "--cache",
        "cache_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Encode cache file (default: $SPARSEBRIDGE_CACHE, else ./sparsebridge-data/encode-cache.sqlite3).",
    )(fn)
    return fn


def _encoder(config: Config) -> Any:
    """The configured sparse encoder, from the builder every model load goes through (device,
    precision)."""
    from ..config.builder import build_sparse_encoder

    _quiet_libraries()
    return build_sparse_encoder(config)


def _index_writer(config: Config, quiet: bool) -> Any:
    """The configured index's write side, with no model loaded (dataset ingest, migrate)."""
    from ..index.writer import IndexWriter

    return IndexWriter.from_config(config, show_progress=not quiet)


def _emit_json(data: Any) -> None:
    click.echo(printable(json.dumps(data, ensure_ascii=False, indent=2, default=str)))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparsebridge")
def main() -> None:
    """Learned sparse (SPLADE) vectors in and out of Elasticsearch, OpenSearch and Qdrant.

    With no config, sparsebridge uses the packaged SPLADE model and an embedded Qdrant Edge index
    in ./sparsebridge-data. Try it offline on Python's own docstrings:

    \b
        sparsebridge ingest stdlib:
        sparsebridge search "read a gzip compressed file"
    """
