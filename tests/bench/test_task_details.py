from saip_bench.bench.runner import task_details


def test_task_details_keep_plain_facts_and_drop_bulk():
    extra = {
        "box_source": "gt-boxes",
        "steps": 40,
        "input_size": [128, 96],
        "final_loss": 0.25,
        "losses": [0.1] * 100,  # loss history: bulk, stays out of the record
        "schedule": {"lr": 1e-3},  # nested structures stay out
        "protocol": None,
    }
    assert task_details(extra) == {
        "box_source": "gt-boxes", "final_loss": 0.25, "input_size": [128, 96], "protocol": None, "steps": 40,
    }
