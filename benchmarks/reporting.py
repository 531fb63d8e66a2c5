"""What the benchmarks print: aligned tables and the one ``bench NAME: ratio=R`` line."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["print_ratio", "print_table"]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``header``, columns right-aligned except the first two."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    for row in rows:
        print(line(row))


def print_ratio(name: str, ratio: float) -> None:
    """The line a benchmark ends with, parsed by whoever tracks the figures over time."""
    print(f"bench {name}: ratio={ratio:.2f}", flush=True)
