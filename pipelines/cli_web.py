"""``koobill users ...`` and ``koobill serve``: the Partner Bills page's commands.

Kept apart from cli.py; heavy modules (argon2, uvicorn, the web app) are imported inside the
commands so that ``koobill --help`` stays fast."""

from __future__ import annotations

import sys

import click


def _password(stdin: bool, prompt: str = "Password") -> str:
    if stdin:
        text = sys.stdin.readline().rstrip("\r\n")
        if not text:
            raise click.UsageError("no password on standard input")
        return text
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True)


@click.group()
def users() -> None:
    """Accounts of the Partner Bills page (koobill serve)."""


@users.command("add")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(["partner", "finance"]))
@click.option("--partner", "partner_id", default=None, help="Partner id (role partner only).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def users_add(obj, username: str, role: str, partner_id: str | None, password_stdin: bool) -> None:
    """Create a user: a partner user sees one partner, a finance user every partner."""
    from pipelines.accounts import add_user
    from pipelines.cli import _run

    user = _run(add_user, obj.data_dir, username, role, _password(password_stdin), partner_id)
    scope = f"partner {user.partner_id}" if user.partner_id else "every partner"
    click.echo(f"added {user.role} user {user.username} ({scope})")


@users.command("list")
@click.pass_obj
def users_list(obj) -> None:
    """Show every user, role, partner and state (never a password)."""
    from pipelines.accounts import list_users

    rows = list_users(obj.data_dir)
    if not rows:
        click.echo("no users: add one with `koobill users add`")
        return
    click.echo(f"{'username':<24} {'role':<8} {'partner':<20} {'state':<9} created")
    for u in rows:
        state = "disabled" if u.disabled else "active"
        click.echo(
            f"{u.username:<24} {u.role:<8} {u.partner_id or '*':<20} {state:<9} {u.created_at}"
        )


@users.command("disable")
@click.option("--username", required=True)
@click.option("--enable", is_flag=True, help="Enable the user again instead.")
@click.pass_obj
def users_disable(obj, username: str, enable: bool) -> None:
    """Disable a user: their sessions and tokens stop working at once."""
    from pipelines.accounts import disable_user
    from pipelines.cli import _run

    user = _run(disable_user, obj.data_dir, username, not enable)
    click.echo(f"{'enabled' if enable else 'disabled'} user {user.username}")


@users.command("reset-password")
@click.option("--username", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def users_reset(obj, username: str, password_stdin: bool) -> None:
    """Set a new password; the user's open sessions are signed out."""
    from pipelines.accounts import reset_password
    from pipelines.cli import _run

    user = _run(reset_password, obj.data_dir, username, _password(password_stdin, "New password"))
    click.echo(f"password of {user.username} reset")


@users.command("token")
@click.option("--username", required=True)
@click.pass_obj
def users_token(obj, username: str) -> None:
    """Issue an API token (Authorization: Bearer ...); printed once, stored hashed."""
    from pipelines.accounts import new_token
    from pipelines.cli import _run

    click.echo(_run(new_token, obj.data_dir, username))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--https-only",
    is_flag=True,
    help="Send the session cookie over HTTPS only (behind a TLS-terminating proxy).",
)
@click.pass_obj
def serve(obj, host: str, port: int, https_only: bool) -> None:
    """Serve the Partner Bills page (read-only over the published data)."""
    import uvicorn

    from pipelines.cli import _run
    from pipelines.web.app import create_app

    app = _run(create_app, obj.data_dir, https_only=https_only)
    click.echo(f"koobill: Partner Bills page on http://{host}:{port}/  data: {obj.data_dir}")
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)


def register(cli: click.Group) -> None:
    cli.add_command(users)
    cli.add_command(serve)
