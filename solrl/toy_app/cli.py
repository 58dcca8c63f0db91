"""The `solrl toy` verbs: pretrain, evaluate and draw the built-in shapes model."""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex


def _load_sampler(args: argparse.Namespace):
    """The model `toy eval` / `toy grid` sample from: base weights, optionally with a trained LoRA."""
    from solrl.models.shapes import ShapesModel
    from solrl.runs import load_lora

    if args.lora:
        state, spec = load_lora(args.lora, args.adapter)
        policy = ShapesModel.from_pretrained(args.model, lora=spec)
        model = policy.inference_copy(args.precision, adapter=None)
        model.update_adapter(state)
        return model
    return ShapesModel.from_pretrained(args.model).inference_copy(args.precision, adapter=None)


def _toy_eval(args: argparse.Namespace) -> int:
    from solrl.sampling import SamplingConfig
    from solrl.toy.captions import load_prompts
    from solrl.toy_app.evaluate import evaluate

    model = _load_sampler(args)
    result = evaluate(model, load_prompts(args.prompts), args.n, SamplingConfig(steps=args.steps, solver=args.solver), args.seed, best_of=args.best_of)
    print(json.dumps(result))
    return 0


def _toy_grid(args: argparse.Namespace) -> int:
    from solrl.sampling import SamplingConfig
    from solrl.toy.captions import load_prompts
    from solrl.toy_app.grid import grid_for

    sampling = SamplingConfig(steps=args.steps, solver=args.solver)
    image = grid_for(_load_sampler(args), load_prompts(args.prompts), sampling, args.seed, args.rows, args.per_caption)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(args.out)
    return 0


def _toy_pretrain(args: argparse.Namespace) -> int:
    from solrl.sampling import SamplingConfig
    from solrl.toy.captions import load_prompts
    from solrl.toy_app.evaluate import evaluate
    from solrl.toy_app.pretrain import PretrainConfig, main_pretrain

    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, init=args.init)
    if args.lr is not None:
        config.lr = args.lr
    if args.warmup is not None:
        config.warmup = args.warmup
    config.arch.prediction = args.prediction
    prompts = load_prompts("eval")

    def eval_fn(model):
        copy = model.inference_copy("fp32", adapter=None)
        return evaluate(copy, prompts, args.eval_n, SamplingConfig(steps=10, solver="euler"), 1234)

    command = (
        f"solrl toy pretrain --out {shlex.quote(args.out)} --steps {args.steps} "
        f"--batch-size {args.batch_size} --seed {args.seed} --prediction {args.prediction} --eval-n {args.eval_n}"
        + (f" --init {shlex.quote(args.init)}" if args.init else "")
        + (f" --lr {args.lr}" if args.lr is not None else "")
        + (f" --warmup {args.warmup}" if args.warmup is not None else "")
    )
    metadata = main_pretrain(args.out, config, command, eval_fn)
    print(json.dumps(metadata["eval"]))
    return 0


def _sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="ShapesModel folder (default: the weights shipped with solrl)")
    p.add_argument("--lora", help="a run's lora/ folder")
    p.add_argument("--adapter", default="ema", choices=["ema", "policy", "old"], help="which saved adapter to apply")
    p.add_argument("--prompts", default="eval", help="train, eval, or a file with one caption a line")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--solver", default="euler", choices=["euler", "dpm2"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "nvfp4", "fp8_e4m3"])
    p.add_argument("--seed", type=int, default=1234)



def add_commands(sub) -> None:
    """Register `solrl toy ...` on the `solrl` parser's subcommands."""
    toy = sub.add_parser("toy", help="the shapes world: pretrain, eval, grid").add_subparsers(dest="toy_command", required=True)
    pre = toy.add_parser("pretrain", help="flow-matching pretraining of ShapesModel from scratch")
    pre.add_argument("--out", required=True, help="folder to write the model to")
    pre.add_argument("--steps", type=int, default=6000)
    pre.add_argument("--batch-size", type=int, default=64)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--prediction", choices=["velocity", "sample"], default="sample", help="what the network outputs (the loss is on the velocity either way)")
    pre.add_argument("--init", help="start from this ShapesModel folder's weights (e.g. a previous release) instead of random ones")
    pre.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    pre.add_argument("--warmup", type=int, help="warm-up steps (default 300)")
    pre.add_argument("--eval-n", type=int, default=8, help="images per held-out caption in the eval stored with the model")
    pre.set_defaults(func=_toy_pretrain)
    ev = toy.add_parser("eval", help="GenEval-style accuracy on the shapes world, as one JSON object")
    _sampler_args(ev)
    ev.add_argument("--n", type=int, default=8, help="images per prompt")
    ev.add_argument("--best-of", type=int, default=0, help="also report the best-of-N size preference per caption (N > --n)")
    ev.set_defaults(func=_toy_eval)
    grid = toy.add_parser("grid", help="save a captioned sample grid")
    _sampler_args(grid)
    grid.add_argument("--out", required=True, help="PNG file to write")
    grid.add_argument("--rows", type=int, default=12, help="captions (one per task first)")
    grid.add_argument("--per-caption", type=int, default=6)
    grid.set_defaults(func=_toy_grid)
