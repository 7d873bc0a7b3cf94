"""``clew plot``, ``clew export`` and ``clew view``: verbs on finished (or running) run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from clew.cli_checks import UsageError

console = Console()


def cmd_plot(args: argparse.Namespace) -> int:
    from clew.eval.plots import plot_run

    console.print(str(plot_run(Path(args.run))))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clew.trainer.export import export_policy

    try:
        out = export_policy(Path(args.run), Path(args.to), adapter=args.adapter)
    except FileExistsError as exc:
        raise UsageError(f"argument --to: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"argument --adapter: {exc}") from None
    console.print(f"exported {args.run} to {out}", markup=False)
    return 0


def with_roles(run: Path) -> list[Path]:
    """A team run (``roles:``) as its roles' runs (``<run>/roles/<role>``, each with its own trajectories)."""
    roles = sorted(p for p in (run / "roles").glob("*") if p.is_dir()) if (run / "roles").is_dir() else []
    return roles or [run]


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the browser view of run directories, or export one iteration as a single HTML file (torch-free)."""
    if args.export:
        from clew.viz.export import export_html

        console.print(str(export_html(Path(args.export), args.iteration, Path(args.runs[0]))))
        return 0
    from clew.viz.server import serve

    serve([role for run in args.runs for role in with_roles(Path(run))], args.host, args.port)
    return 0
