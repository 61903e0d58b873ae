"""Cost of one text-to-image retrieval fine-tune step with the IRRA recipe.

See docs/tasks_single_person.md#text-to-image-retrieval.

One optimiser step as the ``finetune`` protocol of tasks/t2i_retrieval/cuhk_pedes.yaml runs it: a ViT-T image
side at 384x128, CLIP's ViT-B/16 text tower (randomly initialised, saved to a temporary file and loaded by
path as a run loads the user's checkpoint), the cross-modal MLM (1 cross-attention + 4 layers, 512 wide)
and the ID classifier; SDM + MLM + ID, backward, and the recipe's Adam with its groups. ``--batch`` pairs of
random images and 77-token captions. Prints the median step time after one warm-up step, the parameter
counts, the checkpoint load time, and the size of the MLM logits the head computes (targets only) beside
IRRA's every-position logits.

    python benchmarks/retrieval_irra_step.py --threads 2 --batch 8
    python benchmarks/retrieval_irra_step.py --device cuda --batch 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import saip_bench  # noqa: F401  (torchvision shim before timm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=11003, help="training identities (CUHK-PEDES)")
    args = parser.parse_args()

    import torch

    from saip_bench.backbones import create_backbone
    from saip_bench.specs import get_task_spec
    from saip_bench.tasks import common
    from saip_bench.tasks.retrieval import NORMALIZATIONS, RetrievalHead, id_loss, normalize, sdm_loss
    from saip_bench.tasks.text import build_text_side
    from saip_bench.tasks.text.clip import build_text_tower
    from saip_bench.tasks.text.mlm import IGNORE, mask_tokens

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    spec = get_task_spec("t2i_retrieval", "cuhk_pedes")
    protocol = spec.protocols["finetune"]
    head_params = protocol.params["head"]
    encoder = dict(head_params["text_encoder"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip_text.pt"
        torch.save(build_text_tower(encoder["model"]).state_dict(), path)
        started = time.perf_counter()
        side = build_text_side({**encoder, "checkpoint": str(path)}, [])
        load_s = time.perf_counter() - started
    backbone = create_backbone("vit_tiny", img_size=tuple(spec.input_size)).to(device)
    head = RetrievalHead(backbone.num_features, side, int(head_params["embed_dim"]), args.classes, 0.02,
                         mlm=head_params["mlm"]).to(device)
    optimizer = common.build_optimizer(common.schedule_param_groups(backbone, head, protocol.schedule),
                                       protocol.schedule)
    captions = ["the woman wears a white short-sleeved shirt, black trousers and white shoes; she carries "
                "a red handbag on her left shoulder"] * args.batch
    ids = side.tokenizer(captions)
    pids = torch.arange(args.batch, device=device) % args.classes
    images = torch.rand(args.batch, 3, *spec.input_size)
    targets_seen = []

    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

    def step() -> float:
        started = time.perf_counter()
        out = backbone.forward_features(normalize(images.to(device), NORMALIZATIONS["clip"]))
        tokens = head.encode_image(torch.cat([out["cls"][:, None], out["tokens"]], 1))
        text = head.encode_text(ids.to(device))
        loss = sdm_loss(tokens[:, 0], text, pids, head.logit_scale) + id_loss(head, tokens[:, 0], text, pids)
        masked, labels = mask_tokens(ids, head.mask_id, head.masking)
        targets_seen.append(int((labels != IGNORE).sum()))
        loss = loss + head.mlm_term(masked.to(device), labels.to(device), tokens)
        optimizer.zero_grad(set_to_none=True)
        marks = [time.perf_counter()]
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        bounds = [(started, marks[0]), (marks[0], marks[1]), (marks[1], marks[2])]
        for name, (begin, end) in zip(phases, bounds, strict=True):
            phases[name].append(end - begin)
        return time.perf_counter() - started

    step()
    cpu_started = time.process_time()
    times = [step() for _ in range(args.steps)]
    cpu_s = time.process_time() - cpu_started
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    vocab, length = side.vocab_size, ids.shape[1]
    print(json.dumps({
        "device": str(device), "threads": args.threads, "batch": args.batch,
        "step_s_median": round(statistics.median(times), 3), "step_s": [round(t, 3) for t in times],
        "phase_s_median": {name: round(statistics.median(v[1:]), 3) for name, v in phases.items()},
        "cpu_s_per_step": round(cpu_s / args.steps, 2),
        "checkpoint_load_s": round(load_s, 2),
        "params_m": {"image_backbone": round(count(backbone) / 1e6, 2),
                     "text_tower": round(count(head.text_encoder) / 1e6, 2),
                     "mlm": round(count(head.mlm) / 1e6, 2),
                     "classifier": round(count(head.classifier) / 1e6, 2)},
        "mlm_logits_mb": {"targets_only": round(statistics.mean(targets_seen) * vocab * 4 / 2**20, 1),
                          "every_position": round(args.batch * length * vocab * 4 / 2**20, 1)},
    }, indent=1))


if __name__ == "__main__":
    main()
