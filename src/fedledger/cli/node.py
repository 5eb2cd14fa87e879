"""``fedledger node run --config FILE``: start a node process."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def node() -> None:
    """Run and inspect nodes."""


@node.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="Node configuration file (JSON).")
def run(config_path: Path) -> None:
    """Start a node (cloud, edge or device pool) and serve until SIGTERM or Ctrl-C."""
    from fedledger.node.config import load_config
    from fedledger.node.process import run_node

    run_node(load_config(config_path))
