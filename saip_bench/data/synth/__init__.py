"""The synthetic human world: procedural people written as mini versions of the 12 native datasets.

``generate_world(out, preset="tiny", seed=0)`` writes ``<out>/<name>/`` for every dataset (layouts in
``docs/layouts.md``, formats in docs/formats.md) plus ``<out>/pretrain/``; see ``docs/synthetic_world.md``.
"""

from __future__ import annotations

from saip_bench.data.synth.presets import PRESETS, Preset, get_preset
from saip_bench.data.synth.world import DATASETS, EXPORTERS, code_version, generate_world

__all__ = ["DATASETS", "EXPORTERS", "PRESETS", "Preset", "code_version", "generate_world", "get_preset"]
