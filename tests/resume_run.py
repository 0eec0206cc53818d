"""A DLER run for the resume test: trains to max_steps, resuming from the last checkpoint in its output dir.

KILL_AT=generation|optimizer kills this process with SIGKILL after checkpoint-2: while scoring the generation round
at global step 2, or right before the optimizer update at global step 3. No cleanup runs, as when a node dies.
DLER_RESUME_MODE=generating_less turns on adaptive rounds, carry-over and skipping and checkpoints every 4 steps
(kill at step 4 or 5), so that the checkpoint resumed from holds carried groups.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import addition_dataset, even_length_if_a_large, tiny_config  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402

from dler import DLERTrainer  # noqa: E402

KILL_AT = os.environ.get("KILL_AT")
MODE = os.environ.get("DLER_RESUME_MODE", "")
MAX_STEPS, SAVE_STEPS = {"": (6, 2), "generating_less": (8, 4)}[MODE]  # by the kill: a carry buffer to save
GENERATING_LESS = {  # DLER_RESUME_MODE=generating_less: carried rows, skip history and kept fraction must resume
    "adaptive_rounds": True,
    "max_carry_age": 2,
    "skip_no_signal_prompts": True,
    "skip_after": 1,
}


def reward(completions, completion_ids, a, trainer_state, **kwargs):
    if KILL_AT == "generation" and trainer_state.global_step == SAVE_STEPS:
        os.kill(os.getpid(), signal.SIGKILL)
    return even_length_if_a_large(completions, completion_ids, a)


class KillBeforeOptimizerStep(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if KILL_AT == "optimizer" and state.global_step == SAVE_STEPS + 1:
            os.kill(os.getpid(), signal.SIGKILL)


def main(model_dir, output_dir):
    args = tiny_config(
        output_dir,
        truncation_length=12,
        max_steps=MAX_STEPS,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        penalty="thinkprune",
        penalty_kwargs={"budgets": [12, 8], "stage_steps": [4]},
        **(GENERATING_LESS if MODE == "generating_less" else {}),
    )
    trainer = DLERTrainer(
        model=model_dir,
        reward_funcs=reward,
        args=args,
        train_dataset=addition_dataset(),
        callbacks=[KillBeforeOptimizerStep()],
    )
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(os.path.join(output_dir, "final"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
