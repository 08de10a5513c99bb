"""The ``actstore`` command: thin click commands over the library.

Every user error is an ``ActstoreError`` printed as one line with exit code 2;
click's own usage errors also exit 2. Tracebacks appear only with ACTSTORE_DEBUG=1."""
from __future__ import annotations

import os
import sys

import click

from ..errors import ActstoreError
from .analyze import analyze
from .extract import extract
from .inspect import info, ls
from .report import report
from .steering import steer, steering
from .transfer import pull, push
from .verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="actstore")
def cli() -> None:
    """Run a model once over a dataset into a Zarr activation store; analyse it many times."""


cli.add_command(extract)
cli.add_command(ls)
cli.add_command(info)
cli.add_command(analyze)
cli.add_command(push)
cli.add_command(pull)
cli.add_command(verify)
cli.add_command(steering)
cli.add_command(steer)
cli.add_command(report)


def main() -> None:
    debug = os.environ.get("ACTSTORE_DEBUG")
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("actstore: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"actstore: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ActstoreError as exc:
        if debug:
            raise
        click.echo(f"actstore: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("actstore: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line unless debugging
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"actstore: internal error: {type(exc).__name__}: {message} (set ACTSTORE_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
