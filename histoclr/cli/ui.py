"""`histoclr ui`: open the MLflow UI on the store that histoclr runs write to by default."""

from __future__ import annotations

import click

from histoclr.cli.options import tracking_uri_option


@click.command("ui")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (127.0.0.1 keeps it on this machine).")
@tracking_uri_option
def ui(port: int, host: str, tracking_uri: str | None) -> None:
    """Start `mlflow ui` on the local store (./mlflow.db) or the given tracking URI, and print the
    direct link to each experiment's runs table (MLflow's model-training view).

    For a remote tracking server there is nothing to start: the links point at it.
    """
    import os
    import shutil
    import sys

    from histoclr.errors import HistoclrError
    from histoclr.tracking import experiment_links, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    remote = uri.startswith(("http://", "https://"))
    exe = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    if not remote and not os.path.exists(exe):
        raise HistoclrError("the `mlflow` command was not found next to this Python; reinstall histoclr")
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    links = experiment_links(uri, None if remote else f"http://{shown}:{port}")
    if remote:
        click.echo(f"runs go to the tracking server {uri}: open it in a browser")
    else:
        click.echo(f"MLflow UI for {uri} on http://{shown}:{port} (Ctrl-C to stop)")
    for line in links:
        click.echo(f"  {line}")
    if remote:
        return
    sys.stdout.flush()
    os.execv(exe, [exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)])
