"""``saip-bench list {tasks,datasets,methods,backbones,metrics}``."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

KINDS = ("tasks", "datasets", "methods", "backbones", "metrics")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list registered tasks, datasets, methods, backbones, metrics"
    )
    parser.add_argument("kind", choices=KINDS)
    parser.set_defaults(func=run)


def _table(kind: str) -> Table:
    from saip_bench.discovery import import_submodules

    if kind == "backbones":
        from saip_bench.backbones import BACKBONES, count_parameters, create_backbone

        table = Table("backbone", "family", "params (M)", "features", "note", title="backbones")
        for name in BACKBONES.names():
            backbone = create_backbone(name)
            meta = BACKBONES.meta(name)
            table.add_row(
                name, meta["family"], f"{count_parameters(backbone) / 1e6:.3f}",
                str(backbone.num_features), meta.get("paper", ""),
            )
        return table
    if kind == "methods":
        from saip_bench.pretrain.base import METHODS

        import_submodules("saip_bench.pretrain.methods")
        table = Table("method", "backbone families", "needs", "description", title="methods")
        for name in METHODS.names():
            cls = METHODS.get(name)
            needs = [n for n, flag in (("labels", cls.needs_labels), ("keypoints", cls.needs_keypoints),
                                       ("backgrounds", cls.needs_backgrounds)) if flag]
            table.add_row(name, ", ".join(sorted(cls.supported_families)), ", ".join(needs) or "-",
                          (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
        return table
    if kind == "tasks":
        from saip_bench.specs import all_task_specs

        table = Table("task", "dataset", "main metric", "protocols", "input", title="task specs")
        for spec in all_task_specs().values():
            table.add_row(spec.task, spec.dataset, f"{spec.metric.main} ({spec.metric.direction})",
                          ", ".join(spec.protocols), f"{spec.input_size[0]}x{spec.input_size[1]}")
        return table
    if kind == "datasets":
        from saip_bench.specs import dataset_card_paths, load_dataset_card

        table = Table("dataset", "official name", "tasks", "versions", title="dataset cards")
        for path in dataset_card_paths():
            card = load_dataset_card(path)
            table.add_row(card.name, card.official_name, ", ".join(card.tasks), ", ".join(card.versions))
        return table
    from saip_bench.metrics import METRIC_COMMANDS

    import_submodules("saip_bench.metrics")
    table = Table("metric command", "main metric", "description", title="metrics")
    for name in METRIC_COMMANDS.names():
        command = METRIC_COMMANDS.get(name)
        table.add_row(name, command.main_metric, command.help)
    return table


def run(args: argparse.Namespace) -> int:
    Console().print(_table(args.kind))
    return 0
