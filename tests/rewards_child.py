"""Child process for the reward pool tests: behaves like a training script (torch imported at the top).

python tests/rewards_child.py modules   # print what a worker imported, exit WITHOUT close() (atexit test)
python tests/rewards_child.py hang      # keep both workers busy, print their pids, sleep until killed
torchrun --nproc_per_node 2 tests/rewards_child.py dist   # one pool per rank, one worker each
"""

import json
import os
import sys
import time

import torch  # noqa: F401  (a training script imports torch before anything else)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pool_jobs import JOBS  # noqa: E402  (tests/, this script's folder, is on sys.path)

from dler.rewards import GradingPool, MathReward  # noqa: E402

COMPLETIONS = [
    "<think>half of one</think> so \\boxed{\\frac{1}{2}}",
    "<think>try 3</think> \\boxed{3}, no wait: \\boxed{7}",
    "<think>never closed \\boxed{1}",
    "<think>tower</think> \\boxed{5^{5^{5^5}}}",
    "<think>ok</think> \\boxed{2^{10}}",
]
GOLDS = ["0.5", "7", "1", "5", "1024"]
EXPECTED = [1.0, 1.0, 0.0, 0.0, 1.0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours still answers kill(0): look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def modules():
    pool = GradingPool(num_workers=1, answer_timeout=2.0, jobs=JOBS)
    ((_, mods, detail),) = pool.run("modules", [("", "")])
    print(json.dumps({"modules": mods, "detail": detail, "pids": pool.pids}), flush=True)
    # no close(): interpreter exit must stop the worker


def hang():
    import threading

    pool = GradingPool(num_workers=2, answer_timeout=300.0, batch_timeout=300.0, jobs=JOBS)
    pool.start(wait_ready=True)
    # both workers busy on long answers when the parent dies: no pipe EOF will wake them
    threading.Thread(target=pool.run, args=("sleep", [("300", ""), ("300", "")]), daemon=True).start()
    time.sleep(0.5)
    print(json.dumps({"pids": pool.pids}), flush=True)
    time.sleep(600)


def dist():
    import torch.distributed as td

    td.init_process_group("gloo")
    rank = td.get_rank()
    reward = MathReward(num_workers=1, answer_timeout=2.0, batch_timeout=30.0)
    metrics = {}
    scores = reward(prompts=["p"] * len(GOLDS), completions=COMPLETIONS, answer=GOLDS, log_metric=metrics.__setitem__)
    assert scores == EXPECTED, scores
    assert len(reward.pool.pids) == 1, reward.pool.pids
    probe = GradingPool(num_workers=1, answer_timeout=2.0, jobs=JOBS)  # a worker started the same way, under torchrun
    ((_, mods, _),) = probe.run("modules", [("", "")])
    assert "torch" not in mods.split(","), mods
    probe.close()
    pids = reward.pool.pids
    total = torch.tensor([sum(scores)])
    td.all_reduce(total)
    assert total.item() == 2 * sum(EXPECTED), total
    reward.close()
    time.sleep(0.2)
    assert not any(_alive(p) for p in pids), pids
    td.barrier()
    td.destroy_process_group()
    print(f"rank {rank} ok graded={metrics['math/graded']:.2f}", flush=True)


if __name__ == "__main__":
    {"modules": modules, "hang": hang, "dist": dist}[sys.argv[1]]()
