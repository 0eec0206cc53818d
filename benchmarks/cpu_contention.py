"""The demo's step times on a busy CPU: dler's thread policy against torch's defaults, measured in one run.

Each measurement is a fresh process running a shortened `python -m dler.demo` (its real SFT warm start and DLER stage,
the latter with dynamic sampling off: one generation round per step, as the short warm start solves little), once on an idle machine and once with one core kept busy by another process (a spinning Python loop started before
it). Two policies:
- `dler`: what the demo does (`dler.cpu_threads`): one intra-op thread per free core, OpenMP threads that sleep;
- `torch default`: the demo before it, torch's default thread count (one per core) and OpenMP's spinning wait.
Prints the mean SFT and DLER optimizer-step times per case and the ratio busy / idle of each policy.
Target: busy / idle <= 2.5 for the dler policy (issue: 0.15 -> 3.4 s per SFT step with torch's defaults).

    python benchmarks/cpu_contention.py [--sft-steps 40] [--rl-steps 4] [--repeats 1]

Other work on the machine counts as load: the load average before each case is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

POLICIES = ("dler", "torch default")
SPINNER = "while True: pass"


def child(policy: str, sft_steps: int, rl_steps: int) -> dict:
    """In a fresh process: the demo, shortened, with every optimizer step timed; returns mean step times. Nothing
    here imports torch before the demo does, or its thread policy would see torch loaded and change nothing."""
    import dler.demo.pipeline as pipeline
    import dler.demo.training as training

    chosen = pipeline.set_threads
    if policy == "torch default":  # the demo before dler.cpu_threads: torch's own thread count and wait policy
        from dler.cpu_threads import ThreadChoice

        pipeline.set_wait_policy = lambda: "OpenMP's default wait policy"
        chosen = lambda *args: ThreadChoice(None, None, "CPU threads: torch's default")  # noqa: E731
    stages = []

    def choose_then_time(*args):  # torch is loaded by now: time each trainer's steps (SFT's, then DLER's)
        from transformers import TrainerCallback

        import dler.run_logs as run_logs

        original = run_logs.use_progress_bar

        def timed(trainer, callback):
            times = []

            class StepTimer(TrainerCallback):
                def on_step_begin(self, args, state, control, **kwargs):
                    times.append(-time.perf_counter())

                def on_step_end(self, args, state, control, **kwargs):
                    times[-1] += time.perf_counter()

            stages.append(times)
            original(trainer, callback)
            trainer.add_callback(StepTimer())

        run_logs.use_progress_bar = timed
        return chosen(*args)

    pipeline.set_threads = choose_then_time
    # The shortened warm start rarely solves a problem, so dynamic sampling would find no signal: one round per step
    command = training.recipe_command
    training.recipe_command = lambda *a: [*command(*a), "--dynamic_sampling", "false"]
    with tempfile.TemporaryDirectory() as out:
        argv = ["--output-dir", out, "--sft-steps", str(sft_steps), "--sft-problems", str(32 * sft_steps)]
        argv += ["--rl-steps", str(rl_steps), "--rl-problems", "96", "--eval-problems", "8"]
        report = pipeline.main(argv)
    sft, rl = stages
    sft = sft[1:] or sft  # the first step pays for lazy initialisation
    return {
        "sft_step_s": sum(sft) / len(sft),
        "dler_step_s": sum(rl) / len(rl),
        "threads": report["settings"]["torch_threads"],
    }


def measure(policy: str, busy: bool, args) -> dict:
    """One case in a fresh process (OpenMP's settings are read once per process), with a spinner beside it if
    `busy`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if busy else None
    try:
        if spinner:
            time.sleep(1.0)  # let it take its core before the child measures the free ones
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--child", policy, "--sft-steps", str(args.sft_steps)]
        proc = subprocess.run(
            [*cmd, "--rl-steps", str(args.rl_steps)], env=env, capture_output=True, text=True, check=False
        )
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    if proc.returncode:
        sys.exit(f"{policy} ({'busy' if busy else 'idle'}) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    chosen = [line.strip() for line in proc.stdout.splitlines() if "CPU threads" in line]
    return {**result, "load_before": load, "line": chosen[0] if chosen else ""}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft-steps", type=int, default=40)
    p.add_argument("--rl-steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="measure each case this many times; the best is kept")
    p.add_argument("--child", choices=POLICIES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = child(args.child, args.sft_steps, args.rl_steps)
        print(json.dumps(result))
        return
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; load average {os.getloadavg()[0]:.2f}")
    results = {}
    for policy in POLICIES:
        for busy in (False, True):
            runs = [measure(policy, busy, args) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["sft_step_s"] + r["dler_step_s"])
            results[policy, busy] = best
            print(
                f"{policy:>13} {'busy' if busy else 'idle'}: SFT {best['sft_step_s']:.3f} s/step, "
                f"DLER {best['dler_step_s']:.2f} s/step, {best['threads']} threads, "
                f"load before {best['load_before']:.1f}   [{best['line']}]",
                flush=True,
            )
    for policy in POLICIES:
        idle, busy = results[policy, False], results[policy, True]
        print(
            f"{policy:>13}: busy / idle = SFT {busy['sft_step_s'] / idle['sft_step_s']:.2f}x, "
            f"DLER {busy['dler_step_s'] / idle['dler_step_s']:.2f}x"
        )
    print("target: busy / idle <= 2.5x for dler")


if __name__ == "__main__":
    main()
