"""launch/: accelerate and DeepSpeed configs parse, the launchers handle their arguments, and ZeRO-2/3 train the
real recipe for two steps on two CPU ranks through launch/run.sh."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import recipe_args

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
SCRIPTS = [LAUNCH / "run.sh", LAUNCH / "vllm_server.sh", *sorted((LAUNCH / "slurm").glob("*.sbatch"))]


@pytest.mark.parametrize("path", sorted((LAUNCH / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    assert config.distributed_type.value == raw["distributed_type"]
    if raw["distributed_type"] == "DEEPSPEED":
        stage = int(path.stem[4]) if path.stem.startswith("zero") else 2
        assert config.deepspeed_config["zero_stage"] == stage
    if path.stem == "zero3_offload":
        assert config.deepspeed_config["offload_optimizer_device"] == "cpu"


def test_deepspeed_jsons():
    for stage in (2, 3):
        config = json.loads((LAUNCH / "deepspeed" / f"zero{stage}.json").read_text())
        assert config["zero_optimization"]["stage"] == stage and config["gradient_accumulation_steps"] == "auto"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK)


def launch(*args, env=None):
    return subprocess.run(
        [str(LAUNCH / "run.sh"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "LAUNCH_DRY_RUN": "1", **(env or {})},
    )


def test_run_sh_builds_the_commands():
    gpu = launch("--config", "zero3_offload", "--nproc", "8", "recipes/dler_r1_7b.py", "--max_steps", "5")
    assert gpu.returncode == 0
    assert (
        "accelerate.commands.launch --config_file" in gpu.stdout
        and "zero3_offload.yaml --num_processes 8" in gpu.stdout
    )
    assert gpu.stdout.strip().endswith("recipes/dler_r1_7b.py --max_steps 5")
    cpu = launch("--cpu", "--config", "zero3", "recipes/dler_r1_7b.py")
    assert "torch.distributed.run --standalone --nproc_per_node 2" in cpu.stdout
    assert "--use_cpu true --bf16 false --deepspeed" in cpu.stdout and "zero3.json" in cpu.stdout
    assert "--deepspeed" not in launch("--cpu", "--config", "ddp", "recipes/dler_r1_7b.py").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "zero9", "recipes/dler_r1_7b.py"], "unknown --config zero9; one of: ddp multinode zero2"),
        (["recipes/missing.py"], "no recipe file recipes/missing.py"),
        ([], "missing RECIPE"),
        (["--nproc", "two", "recipes/dler_r1_7b.py"], "--nproc must be a positive integer"),
        (["--frobnicate", "recipes/dler_r1_7b.py"], "unknown option --frobnicate"),
    ],
)
def test_run_sh_rejects_bad_arguments(args, message):
    result = launch(*args)
    assert result.returncode == 2 and message in result.stderr


def test_slurm_multinode_script_wires_training_and_vllm_nodes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[[ $1 == show ]] && printf "node1\\nnode2\\nnode3\\n"\n')
    (bin_dir / "srun").write_text(f"#!/bin/bash\necho $* >> {tmp_path}/srun.log\n")  # one line per call
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[1-3]",
        "SLURM_JOB_ID": "7",
        "MODEL": "my/model",
        "VLLM_TP": "2",
    }
    subprocess.run(
        ["bash", str(LAUNCH / "slurm" / "train.sbatch"), "recipes/dler_r1_7b.py", "--max_steps", "5"],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    calls = (tmp_path / "srun.log").read_text()
    vllm = next(line for line in calls.splitlines() if "vllm_server.sh" in line)
    assert "-w node3" in vllm and "my/model --tp 2 --dp 8 --port 8000" in vllm
    train = next(line for line in calls.splitlines() if "accelerate" in line)
    assert "-w node1,node2" in train and "--num_machines 2 --num_processes 16" in train
    assert "--main_process_ip node1" in train and "--vllm_mode server --vllm_server_host node3" in train
    assert train.rstrip().endswith("--max_steps 5")
    one_node = {**env, "SLURM_JOB_NODELIST": "node1"}
    (bin_dir / "scontrol").write_text("#!/bin/bash\n[[ $1 == show ]] && echo node1\n")
    result = subprocess.run(
        ["bash", str(LAUNCH / "slurm" / "train.sbatch"), "recipes/dler_r1_7b.py"],
        cwd=ROOT,
        env=one_node,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "needs at least 2 nodes" in result.stderr


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_zero_trains_dler_tiny_on_two_cpu_ranks(zero, tiny_model_dir, tmp_path):
    pytest.importorskip("deepspeed")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{a} + 1", "answer": str(a + 1)}) + "\n" for a in range(16)))
    out = tmp_path / "out"
    cmd = [
        str(LAUNCH / "run.sh"),
        "--cpu",
        "--config",
        zero,
        "--nproc",
        "2",
        "recipes/dler_tiny.py",  # its DEFAULTS, the tiny model and data given explicitly
        *recipe_args(
            tiny_model_dir,
            data,
            out,
            per_device_train_batch_size=4,
            dynamic_sampling="false",
            max_steps=2,
            reward_workers=1,
            logging_steps=1,
        ),
    ]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=500)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{zero} run hung:\n{proc.communicate()[0][-4000:]}")
    assert proc.returncode == 0, output[-6000:]
    state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").exists() else None
    assert state is None or state["global_step"] == 2
    assert len(re.findall(r"step [12]/2: loss ", output)) >= 2, output[-3000:]  # two optimizer steps logged


def test_make_targets_chain_train_eval_and_table():
    out = subprocess.run(
        ["make", "-n", "reproduce-dler-1p5b", "STAMP=/dev/null"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    steps = [line for line in out.splitlines() if line.startswith("make ")]
    assert steps == [
        "make train RECIPE=recipes/dler_r1_1p5b.py",
        "make eval MODEL=runs/dler-r1-1p5b EVAL_DIR=runs/eval/dler-r1-1p5b",
        "make eval MODEL=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B EVAL_DIR=runs/eval/r1-1p5b",
        "make table RUNS=runs/eval/dler-r1-1p5b BASELINE=runs/eval/r1-1p5b REPORT_DIR=runs/eval/report-1p5b",
    ]
    train = subprocess.run(
        ["make", "-n", "train", "RECIPE=recipes/dler_r1_7b.py", "NPROC=8", "STAMP=/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "launch/run.sh --config zero2 --nproc 8 recipes/dler_r1_7b.py" in train
    help_text = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("test", "demo", "train", "eval", "table", "reproduce-dler-1p5b", "penalty-grid"):
        assert target in help_text
