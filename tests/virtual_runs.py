"""The FLUX.1-sized stand-in run on the virtual clock (solrl.cluster.virtual) that the virtual
scheduler tests share: its config, one run of it, and the seeds it selected."""

from solrl.cluster.driver import Driver
from solrl.cluster.virtual import VirtualRuntime
from solrl.config import load_config, shipped_config
from solrl.workers.store import read_log

PROMPTS, SEEDS, ITERATIONS = 6, 96, 3


def virtual_config(tmp_path, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}, a photo\n" for i in range(12)))
    validation = tmp_path / "validation.txt"  # train.keep_best chooses on these (none an eval prompt)
    validation.write_text("".join(f"validation prompt {i}\n" for i in range(4)))
    return load_config(
        shipped_config("flux1"),
        [
            f"prompts={prompts}", f"eval.prompts={prompts}", f"eval.validation={validation}", "eval.n=1", "eval.grid_rows=0", f"train.iterations={ITERATIONS}",
            f"rollout.prompts_per_iteration={PROMPTS}", "cluster.control_port=null", "cluster.stand_in={model: flux1}",
            "cluster.checkpoint_every=0", "cluster.snapshot_every=2", *extra,
        ],
    )  # fmt: skip


def virtual_run(config, out) -> tuple[dict, VirtualRuntime]:
    runtime, lines = VirtualRuntime(), []
    report = Driver(config, out, log=lines.append, runtime=runtime).run()
    runtime.lines = lines
    return report, runtime


def selected_seeds(run_dir):
    """The candidate log's rows in a fixed order: who was selected, with both rewards, whoever wrote them."""
    log = read_log(run_dir / "candidates")
    key = ["iteration", "prompt_id", "seed"]
    columns = [*key, "proxy_reward", "bf16_reward", "status"]
    return log.sort_by([(k, "ascending") for k in key]).select(columns)
