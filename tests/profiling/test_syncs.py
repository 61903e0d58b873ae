"""The sync counter counts what would stop a GPU's host, and only that."""

import torch
from torch import nn

from saip_bench.profiling.syncs import SyncCounter, format_table


def _count(step, *device_values):
    counter = SyncCounter()
    with counter.tracking():
        counter.mark_device(*device_values)
        with counter.counting() as counts:
            step()
    return counts


def test_reads_of_device_values_are_counted_and_host_values_are_not():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    table = torch.arange(5)

    def step():
        y = model(x).detach()
        y.sum().item()
        bool((y > 0).any())
        float(y.mean())
        y.cpu()
        y.tolist()
        y.to("cpu")
        int(table.sum())  # a host table: no device involved
        table.tolist()

    counts = _count(step, model)
    assert counts.totals()["reads"] == 6
    assert set(counts.reads) == {"_local_scalar_dense", "cpu", "tolist", "to('cpu')"}


def test_data_dependent_ops_are_counted_in_forward_and_backward():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)

    def step():
        y = model(x)
        kept = y[y > 0]  # nonzero, and an index_put with the mask in backward
        torch.where(y > 0)
        y.unique()
        kept.sum().backward()

    counts = _count(step, model)
    assert counts.data_dependent["index[mask]"] == 1
    assert counts.data_dependent["nonzero"] == 1
    assert counts.data_dependent["index_put[mask]"] == 1
    assert counts.data_dependent["_unique2"] == 1


def test_copies_of_fresh_host_tensors_count_and_non_blocking_ones_are_apart():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    device = torch.device("cpu")  # a device object is the accelerator; the string "cpu" is the host
    counter = SyncCounter()
    with counter.tracking():
        counter.mark_device(model)
        batch = torch.arange(4)  # built before the region: the loader's batch
        with counter.counting() as counts:
            y = model(x)
            y + torch.tensor([1.0, 2.0], device=device)  # blocking
            y[[0, 1]]  # a Python list indexing a device tensor: copied implicitly
            y[torch.arange(2)]  # a host index tensor: the same
            y[torch.arange(2, device=y.device)]  # built on the device: nothing to copy
            torch.arange(3).to(device, non_blocking=True)
            batch.to(device)  # blocking copy of the batch
            batch.to(device, non_blocking=True)  # from pinned memory on a GPU: no stall
            torch.zeros(3, device="cpu")  # host by spelling, as torch's optimisers create step counts
    totals = counts.totals()
    assert (totals["small_h2d"], totals["async_h2d"], totals["batch_h2d"]) == (3, 1, 1)
    assert counts.small_h2d["index (implicit)"] == 2


def test_an_optimiser_step_and_its_host_step_counters_cost_nothing():
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(4, 3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    counter = SyncCounter()
    with counter.tracking():
        counter.mark_device(model)
        step()  # warm-up: optimiser state (its step counts are host tensors, read on the host)
        counter.mark_device(optimizer)
        for _ in range(3):
            with counter.counting() as counts:
                step()
            assert counts.totals() == dict.fromkeys(counts.totals(), 0), counts.sites


def test_sites_name_the_line_and_the_table_has_every_column():
    model = nn.Linear(3, 2)
    x = torch.randn(2, 3)
    counts = _count(lambda: model(x).detach().sum().item(), model)
    (site,) = counts.sites
    assert site.startswith("reads _local_scalar_dense: ") and "test_syncs.py:" in site
    table = format_table([("step", counts.totals())])
    assert "host reads" in table and "blocking batch H2D" in table
    assert table.splitlines()[-1].split()[1] == "1"
