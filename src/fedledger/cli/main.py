"""The ``fedledger`` command. This is the one place that turns errors into exit codes."""

from __future__ import annotations

import sys

import click

from fedledger import __version__
from fedledger.errors import EXIT_CODES, FedledgerError


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes:\n\n" + "\n".join(f"  {c}: {t}" for c, t in EXIT_CODES.items()),
)
@click.version_option(__version__, prog_name="fedledger")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Blockchain-secured hierarchical federated learning for IoT and edge networks."""
    from fedledger.logs import configure_logging

    configure_logging(verbose)


def _register_commands() -> None:
    from fedledger.cli import audit, bench, ceremony, chain, demo, node, privacy, sim, verify

    cli.add_command(node.node)
    cli.add_command(chain.chain)
    cli.add_command(demo.demo)
    cli.add_command(bench.bench)
    cli.add_command(sim.sim)
    cli.add_command(verify.verify)
    cli.add_command(ceremony.ceremony)
    cli.add_command(audit.audit)
    cli.add_command(privacy.privacy)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, mapping expected failures to their exit codes."""
    _register_commands()
    try:
        cli.main(args=argv, prog_name="fedledger", standalone_mode=False)
    except FedledgerError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
