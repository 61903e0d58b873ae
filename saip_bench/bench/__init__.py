"""Benchmark runner: presets -> plan of units -> one atomic JSON record per finished unit."""

from saip_bench.bench.plan import Unit, parse_shard, plan_units, shard_units
from saip_bench.bench.presets import BenchPreset, load_bench_preset
from saip_bench.bench.store import OverwritePolicy, RecordStore, UnitStatus, load_records

__all__ = [
    "BenchPreset", "OverwritePolicy", "RecordStore", "Unit", "UnitStatus", "load_bench_preset",
    "load_records", "parse_shard", "plan_units", "shard_units",
]
