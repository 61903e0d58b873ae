"""Leaderboards from records only: tables (pandas), Markdown / CSV / HTML, radar and Pareto plots."""

from saip_bench.leaderboard.render import write_boards
from saip_bench.leaderboard.tables import Board, build_boards

__all__ = ["Board", "build_boards", "write_boards"]
