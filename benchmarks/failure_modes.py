"""Why images fail the strict check, before and after training (issue 29 item 1's mechanism).

Each run's final EMA adapter, and the base model, sample the run's eval plan (its eval captions
and fixed seeds: the held-out captions, or the validation ones for config_search.py's runs; or
--prompts validation); every image that fails the caption is given the first
constraint it breaks, in this order: extra objects, missing objects, an object the detector cannot
recognise, a wrong shape, a wrong colour, the relation. Beside them, the mean side of the objects
found on one- or two-object captions, whose size preference peaks at 13 px (the renderer's largest).

    python benchmarks/failure_modes.py RUN [RUN ...] [--prompts eval|validation] [--n 16]

One row per run plus the base model (the runs must share a model); rates are per image, averaged
over captions. Appends a RESULTS.md entry and one JSON line per row.
"""

from __future__ import annotations

import argparse
import collections
import pathlib

import numpy as np
from common import append_results, with_json_lines
from safetensors.torch import load_file

from solrl.builders import build_policy
from solrl.config import load_config
from solrl.evaluation import eval_copy, load_run_prompts, validation_prompts
from solrl.sampling.eval_images import eval_pairs, generate
from solrl.toy.captions import Spec, parse_caption
from solrl.toy.detector import Detection, detect, score_detections

KINDS = ("extra objects", "missing objects", "unrecognised", "wrong shape", "wrong colour", "relation")


def first_broken(spec: Spec, found: list[Detection]) -> str | None:
    """The first constraint of KINDS an image breaks, or None when it passes."""
    if score_detections(spec, found)[1]:
        return None
    if len(found) != len(spec.objects):
        return "extra objects" if len(found) > len(spec.objects) else "missing objects"
    if any(d.shape is None for d in found):
        return "unrecognised"
    if sorted(d.shape for d in found) != sorted(o.shape for o in spec.objects):
        return "wrong shape"
    without_relation = Spec(spec.task, spec.objects, None)
    return "relation" if score_detections(without_relation, found)[1] else "wrong colour"


def tally(model, pairs, sampling) -> dict:
    """Per caption: the share of images failing by each kind; and the sides of objects found on
    one- and two-object captions."""
    images, _ = generate(model, pairs, sampling, 128)
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    sides = []
    for (caption, _), found in zip(pairs, detect(images)):
        spec = parse_caption(caption)
        kinds[caption][first_broken(spec, found)] += 1
        if len(spec.objects) <= 2:
            sides += [d.side for d in found]
    per_caption = [{k: c[k] / sum(c.values()) for k in (None, *KINDS)} for c in kinds.values()]
    return {k or "pass": float(np.mean([p[k] for p in per_caption])) for k in (None, *KINDS)} | {
        "mean side, 1-2 objects": float(np.mean(sides))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="run folders (solrl train --out) with lora/ema.safetensors")
    parser.add_argument("--prompts", choices=["eval", "validation"], default="eval")
    parser.add_argument("--n", type=int, help="images a caption (default: the run's eval.n)")
    args = parser.parse_args()
    config = load_config(args.runs[0] / "config.yaml")
    prompts = validation_prompts(config) if args.prompts == "validation" else load_run_prompts(config, config.eval.prompts)
    which = config.eval.validation if args.prompts == "validation" else config.eval.prompts  # what the runs' eval.prompts names
    pairs = eval_pairs(prompts, args.n or config.eval.n, config.eval.seed)
    policy = build_policy(config.model)
    rows = {"base model": tally(eval_copy(policy, config), pairs, config.eval.sampling)}
    for run in args.runs:
        if load_config(run / "config.yaml").model != config.model:
            raise SystemExit(f"{run} trains another model than {args.runs[0]}; pass runs of one model")
        rows[str(run)] = tally(eval_copy(policy, config, load_file(run / "lora" / "ema.safetensors")), pairs, config.eval.sampling)
    columns = ["pass", *KINDS, "mean side, 1-2 objects"]
    table = [[name, *(f"{r[c]:.3f}" if c != columns[-1] else f"{r[c]:.2f}" for c in columns)] for name, r in rows.items()]
    points = [{"model": name, **{c: round(r[c], 4) for c in columns}} for name, r in rows.items()]
    append_results(
        f"Why images fail the strict check ({which} captions, {len(pairs) // len(prompts)} seeds each)",
        with_json_lines(["model", *columns], table, points),
        "each failing image counted once, by the first constraint it breaks in the column order; rates averaged over captions",
    )


if __name__ == "__main__":
    main()
