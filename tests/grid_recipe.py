"""A minimal training recipe for the penalty-grid test: the tiny model on the addition prompts."""

from dataclasses import dataclass

from helpers import addition_dataset, even_length

from dler import DLERTrainer


@dataclass
class ScriptArguments:
    model_dir: str = ""


def main(script_args, training_args, model_args):
    trainer = DLERTrainer(
        model=script_args.model_dir, reward_funcs=even_length, args=training_args, train_dataset=addition_dataset()
    )
    trainer.train()
    return trainer
