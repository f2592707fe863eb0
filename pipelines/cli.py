"""``koobill``: the command line, a thin layer over the pipeline functions.

Heavy modules (DuckDB, pandas, Airflow, Great Expectations) are imported inside the commands
that need them, so ``koobill --help`` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines import __version__
from pipelines.cli_web import register as register_web
from pipelines.schema import EXPORT_FORMATS


class _Ctx:
    """The data dir a command works on: resolved when a command first asks for it (so that
    ``koobill CMD --help`` reads no setting), named once on stderr, checked on demand."""

    def __init__(self, data_dir: str | None):
        self._arg = data_dir
        self._where: tuple[Path, str] | None = None  # (path, where it came from)
        self._said = False

    def _resolve(self) -> tuple[Path, str]:
        if self._where is None:
            from pipelines.config import data_dir_source, resolve_data_dir

            source = "--data-dir" if self._arg else _run(data_dir_source)
            self._where = (_run(resolve_data_dir, self._arg), source)
        return self._where

    def _say(self) -> None:
        """One line on stderr: which data dir the command used, and why that one."""
        if not self._said:
            path, source = self._resolve()
            from pipelines import objectstore

            remote = objectstore.remote_of(path)
            where = f"{remote} (local mirror {path})" if remote else str(path)
            click.echo(f"koobill: data dir {where} (from {source})", err=True)
            self._said = True

    @property
    def data_dir(self) -> Path:
        """The data dir, refused (error, exit 1) unless it exists and has ``landing/``."""
        from pipelines.config import require_data_dir

        self._say()
        path, source = self._resolve()
        return _run(require_data_dir, path, source=source)

    def to_create(self, path: str | None = None) -> Path:
        """For ``init`` and ``generate``, which create the data dir: its path, unchecked."""
        from pipelines.config import resolve_data_dir

        if path is not None:
            self._where = (_run(resolve_data_dir, path), "argument")
        self._say()
        return self._resolve()[0]


def _run(fn, *args, **kwargs):
    """Call a pipeline function; turn user-actionable errors into a clean message + exit 1."""
    from pipelines.calendar import DateError
    from pipelines.errors import KoobillError

    try:
        return fn(*args, **kwargs)
    except (KoobillError, DateError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="koobill")
@click.option(
    "--data-dir",
    default=None,
    help="Data dir (landing/, lake/, warehouse.duckdb, exports/). "
    "Default: $KOOBILL_DATA_DIR, then ./data",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None) -> None:
    """koobill: KooGallery partner bills from raw order and usage data.

    Every command works on one data dir (landing/, lake/, warehouse.duckdb, exports/), named
    on stderr when the command starts. Only `init` and `generate` create one; the others refuse
    a path that does not exist or has no landing/ folder."""
    ctx.obj = _Ctx(data_dir)


@cli.command()
@click.argument("directory", required=False)
@click.pass_obj
def init(obj: _Ctx, directory: str | None) -> None:
    """Create a data dir: DIRECTORY (default: --data-dir, $KOOBILL_DATA_DIR, then ./data) with
    landing/<feed>/ for every feed. Idempotent; refuses a non-empty folder that is no data dir."""
    from pipelines import objectstore
    from pipelines.config import init_data_dir

    root = _run(init_data_dir, obj.to_create(directory))
    where = objectstore.remote_of(root) or str(root)  # a bucket's data dir by its s3:// URI
    click.echo(f"data dir ready: {where}")
    click.echo(f"  land files under {where}/landing/<feed>/<YYYY-MM-DD>/, then:")
    click.echo(f"  export KOOBILL_DATA_DIR={where}")
    click.echo("  koobill ingest --date YYYY-MM-DD")


@cli.command()
@click.option("--date", "day", required=True, help="Landing date YYYY-MM-DD to ingest.")
@click.option("--quiet", is_flag=True, help="Print only the summary line.")
@click.option(
    "--max-quarantine-share",
    type=click.FloatRange(0, 1),
    default=None,
    help="Fail a feed whose quarantined share of the day's rows exceeds this "
    "(default $KOOBILL_MAX_QUARANTINE_SHARE, then 0.05).",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Record the date even if no feed has a folder for it (a day that truly had no "
    "data); it then counts as ingested for the month close.",
)
@click.pass_obj
def ingest(
    obj: _Ctx, day: str, quiet: bool, max_quarantine_share: float | None, allow_empty: bool
) -> None:
    """Ingest every feed of one landing date and refresh the estimates as of that date.

    A date no feed has a folder for is an error (its files may not have arrived yet), unless
    --allow-empty."""
    from pipelines.calendar import parse_date
    from pipelines.ingest import ingest_date, print_ingest_result

    _run(parse_date, day)  # a mistyped date is named before the data dir is looked at
    result = _run(
        ingest_date,
        obj.data_dir,
        day,
        progress=None if quiet else click.echo,
        max_quarantine_share=max_quarantine_share,
        allow_empty=allow_empty,
    )
    print_ingest_result(result, echo=click.echo, quiet=quiet)


@cli.command()
@click.option("--month", required=True, help="Bill month YYYY-MM to close.")
@click.option("--force", is_flag=True, help="Close even though landing dates are missing.")
@click.option(
    "--restate",
    is_flag=True,
    help="Recompute a closed month: a new version only for the partners whose bill changed.",
)
@click.pass_obj
def close(obj: _Ctx, month: str, force: bool, restate: bool) -> None:
    """Generate (validate and publish) the bills of a month."""
    from pipelines.close import close_month, print_close_result

    result = _run(close_month, obj.data_dir, month, force=force, restate=restate, echo=click.echo)
    print_close_result(result, echo=click.echo)


@cli.command()
@click.option("--month", required=True, help="Closed bill month YYYY-MM.")
@click.option("--all", "all_rows", is_flag=True, help="Print every check, not only residuals.")
@click.pass_obj
def reconcile(obj: _Ctx, month: str, all_rows: bool) -> None:
    """Reconcile a closed month: landed rows, records, lines, bills, invoices, payments.

    Stores the month's reconciliation table; exits 1 when a residual is not zero."""
    from pipelines.recon_report import print_reconciliation  # recon hook
    from pipelines.reconcile import reconcile_month

    report = _run(reconcile_month, obj.data_dir, month)
    print_reconciliation(report, click.echo, all_rows=all_rows)
    sys.exit(1 if report.residuals else 0)


@cli.command()
@click.option("--partner", required=True, help="Partner id.")
@click.option("--month", required=True, help="Closed bill month YYYY-MM.")
@click.option(
    "--version", "version", type=int, default=None, help="Bill version (default: current)."
)
@click.pass_obj
def explain(obj: _Ctx, partner: str, month: str, version: int | None) -> None:
    """A bill's provenance (landing files, code, settings) and its estimate variance."""
    from pipelines.recon_report import explain as explain_bill  # recon hook
    from pipelines.recon_report import print_explain

    print_explain(_run(explain_bill, obj.data_dir, partner, month, version), click.echo)


@cli.command("amount-due")
@click.option("--partner", required=True, help="Partner id.")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="Date YYYY-MM-DD (default: now, i.e. today in Beijing or the latest landing date, "
    "whichever is later).",
)
@click.pass_obj
def amount_due_cmd(obj: _Ctx, partner: str, as_of: str | None) -> None:
    """Print a partner's Amount Due pane: outstanding, unpaid bills, payments, credit."""
    from pipelines.amount_due import amount_due, print_amount_due

    result = _run(amount_due, obj.data_dir, partner, as_of=as_of)
    print_amount_due(result, echo=click.echo)


@cli.command()
@click.option("--month", required=True, help="Closed bill month YYYY-MM.")
@click.option("--partner", default=None, help="Only this partner (default: every partner).")
@click.option(
    "--format",
    "formats",
    default=",".join(EXPORT_FORMATS),
    show_default=True,
    help="Comma-separated formats; add focus (opt-in, not in the default set) for the FOCUS 1.2 "
    "cost-and-usage dataset in Parquet and CSV.",
)
@click.pass_obj
def export(obj: _Ctx, month: str, partner: str | None, formats: str) -> None:
    """Write the finance exports of a closed month."""
    from pipelines.exports import export_month, print_export_result

    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    result = _run(export_month, obj.data_dir, month, partner=partner, formats=fmts)
    print_export_result(result, echo=click.echo)


@cli.group()
def exports() -> None:
    """Export history."""


@exports.command("list")
@click.option("--partner", default=None, help="Only this partner's files (default: every partner).")
@click.option("--month", default=None, help="Only this bill month YYYY-MM (default: every month).")
@click.pass_obj
def exports_list(obj: _Ctx, partner: str | None, month: str | None) -> None:
    """Show the export history."""
    from pipelines.exports import list_exports, print_exports

    rows = _run(list_exports, obj.data_dir, partner=partner, month=month)
    print_exports(rows, echo=click.echo)


@cli.command()
@click.option("--start", required=True, help="First landing date YYYY-MM-DD.")
@click.option("--end", required=True, help="Last landing date YYYY-MM-DD.")
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--usage-rows-per-day", default=2000, show_default=True, type=int)
@click.option("--partners", "n_partners", default=4, show_default=True, type=int)
@click.option(
    "--bad-rows/--no-bad-rows",
    default=True,
    show_default=True,
    help="Include a small share of late, duplicate and bad rows.",
)
@click.pass_obj
def generate(
    obj: _Ctx,
    start: str,
    end: str,
    seed: int,
    usage_rows_per_day: int,
    n_partners: int,
    bad_rows: bool,
) -> None:
    """Generate a realistic landing zone for a span of dates (seeded); creates the data dir."""
    from pipelines.generate import generate as gen

    summary = _run(
        gen,
        obj.to_create(),
        start,
        end,
        seed=seed,
        usage_rows_per_day=usage_rows_per_day,
        n_partners=n_partners,
        bad_rows=bad_rows,
        progress=click.echo,
    )
    click.echo(summary)


@cli.command("rebuild-warehouse")
@click.pass_obj
def rebuild_warehouse(obj: _Ctx) -> None:
    """Rebuild warehouse.duckdb from the lake's Delta tables."""
    from pipelines.warehouse import rebuild

    _run(rebuild, obj.data_dir)
    click.echo(f"rebuilt {obj.data_dir / 'warehouse.duckdb'} from {obj.data_dir / 'lake'}")


@cli.command("warehouse-path")
@click.pass_obj
def warehouse_path(obj: _Ctx) -> None:
    """Print the path of the newest published analysts' database, to open read-only with
    DuckDB. With a data dir on object storage, it is fetched into the local mirror first
    (only when the bucket's copy changed); run it again to see a newer publication."""
    from pipelines import objectstore
    from pipelines.config import Paths

    path = _run(lambda root: objectstore.refresh(Paths(root).warehouse, every_s=0), obj.data_dir)
    if not path.exists():
        _run(_nothing_published, path)
    click.echo(str(path))


def _nothing_published(path) -> None:
    from pipelines.errors import KoobillError

    raise KoobillError(f"nothing is published yet ({path}): ingest a landing date first")


def main() -> None:
    cli(prog_name="koobill")


register_web(cli)


if __name__ == "__main__":
    main()
