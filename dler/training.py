"""The training run a recipe starts: take `output_dir`, load and check the data before the model, train, resume.

`train` is what `dler.recipe.run` calls once the settings are parsed; `run_settings` is what a restart must keep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from transformers import TrainerCallback
from trl import get_peft_config

from dler.presets import OBJECTIVE
from dler.prompts import (
    PromptFormat,
    check_tokenizer,
    check_trainable,
    prompt_settings,
    resolve,
    write_prompt_file,
)
from dler.run_logs import MetricsLog, check_report_to, finish_run, use_progress_bar
from dler.runs import (
    RUN_FILE,
    RunLock,
    find_resume_checkpoint,
    read_run,
    settings_differences,
    write_json_atomically,
)

logger = logging.getLogger(__name__)


def select_problems(rows, solve_rate_column: str | None, max_problems: int | None):
    """Occasionally solvable problems only (0 < p < 1, Concise Reasoning via RL), then the first `max_problems`."""
    if solve_rate_column:
        if solve_rate_column not in rows.column_names:
            raise ValueError(
                f"no column {solve_rate_column!r} (columns: {rows.column_names}); run `dler solve-rate` first"
            )
        rates = rows[solve_rate_column]
        keep = [i for i, p in enumerate(rates) if 0 < p < 1]
        logger.warning(
            "Solve rates: %d problems kept (0 < p < 1), %d never solved and %d always solved left out",
            len(keep),
            sum(p <= 0 for p in rates),
            sum(p >= 1 for p in rates),
        )
        if not keep:
            raise ValueError(f"no problem has 0 < {solve_rate_column} < 1: nothing for stage 2 to learn from")
        rows = rows.select(keep)
    if max_problems:
        rows = rows.select(range(min(max_problems, len(rows))))
    return rows


def training_prompt(script_args, training_args) -> PromptFormat:
    """The prompt format a run trains with: `--prompt_format`, its system prompt replaced by `--system_prompt`, raw
    text with `--no_chat_template`, TRL's `--chat_template_kwargs`, the reward's `--answer_region`. Formats whose
    responses end at stop strings are refused: TRL's generation does not stop at strings."""
    fmt = resolve(
        script_args.prompt_format,
        system_prompt=script_args.system_prompt,
        chat_template=None if script_args.chat_template else False,
        chat_template_kwargs=training_args.chat_template_kwargs or None,
        answer_region=script_args.answer_region,
    )
    return check_trainable(fmt)


def check_prompts(model_args, training_args, datasets: dict, prompt: PromptFormat) -> None:
    """Before the model loads: a chat format needs a tokenizer with a chat template, and every prompt, cut to
    `max_prompt_length`, plus a full response must fit the model's context (read from its config and tokenizer
    only); prompts the cap will cut are counted and logged."""
    from transformers import AutoConfig, AutoTokenizer

    from dler.data import check_prompt_lengths, model_context_length, prompt_token_counts

    kwargs = {"revision": model_args.model_revision, "trust_remote_code": training_args.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, **kwargs)
    check_tokenizer(prompt, tokenizer, model_args.model_name_or_path)
    context = model_context_length(AutoConfig.from_pretrained(model_args.model_name_or_path, **kwargs))
    for name, dataset in datasets.items():
        if dataset is not None:
            counts = prompt_token_counts(dataset, tokenizer, chat_template_kwargs=prompt.chat_template_kwargs)
            check_prompt_lengths(
                counts, training_args.max_prompt_length, training_args.max_completion_length, context, name
            )


RESUME_IGNORES = {  # may change between restarts: how the batch is laid out on the hardware, how often to save
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "per_device_eval_batch_size",
    "max_steps",
    "eval_steps",
    "eval_strategy",
    "save_steps",
    "use_vllm",
    "vllm_mode",
    "grader",
}
RESUME_SCRIPT_SETTINGS = (
    "grader",
    "dataset_name",
    "dataset_split",
    "prompts_per_generation",
    "prompts_per_update",
    "max_problems",
    "solve_rate_column",
)
# What a run recorded by an earlier dler, which did not record these settings yet, trained with: recipes trained one
# reward function on the R1 prompt, so a restart after an upgrade is not taken for a change of objective.
NOT_YET_RECORDED = {
    "correctness_rewards": None,
    "reward_weights": None,
    "multi_objective_aggregation": "sum_then_normalize",
    "scale_rewards": None,
}


def recorded_settings(previous: dict) -> dict:
    """The settings of a recorded run, with the values it trained with for those its dler did not record yet."""
    return {**NOT_YET_RECORDED, "prompt": prompt_settings(resolve("r1")), **previous["settings"]}


def run_settings(script_args, training_args, model_args) -> dict:
    """The settings that define what a run trains: a restart must keep them to continue the same run."""
    settings = {name: getattr(training_args, name) for name in OBJECTIVE if name not in RESUME_IGNORES}
    settings.update({name: getattr(script_args, name) for name in RESUME_SCRIPT_SETTINGS})
    settings["model_name_or_path"] = model_args.model_name_or_path
    settings["prompt"] = prompt_settings(training_prompt(script_args, training_args))  # what the model sees
    return json.loads(json.dumps(settings, default=str))


def train(script_args, training_args, model_args, callbacks=None):
    """Take `output_dir` for this run, then train (resuming from its newest whole checkpoint) unless it finished.

    Returns the trainer, or None when the run in `output_dir` had already finished. `callbacks`: extra
    `TrainerCallback`s; a `ProgressCallback` among them replaces the default progress bar.
    """
    output_dir = training_args.output_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir} is a file; give a folder (it is created if missing)")
    check_report_to(training_args.report_to)
    check_model_name(model_args.model_name_or_path)
    is_main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(output_dir) if is_main else contextlib.nullcontext() as lock:  # failing before training: removed
        return _train_in(output_dir, is_main, script_args, training_args, model_args, callbacks, lock)


def check_model_name(model: str | None) -> None:
    """`--model_name_or_path` names a model folder or a hub id that exists (`dler eval --model`'s check: "did you
    mean", the offline switch when the hub cannot be reached), before `output_dir` is taken or any data loads."""
    from dler.eval.model_id import model_problem

    problem = model_problem(model or "", "--model_name_or_path", adapters=True)
    if problem:
        raise ValueError(problem)


def _train_in(output_dir, is_main, script_args, training_args, model_args, callbacks, lock=None):
    """`train` once `output_dir` is this run's."""
    from dler.data import check_usable_rows, load_rows, math_prompts
    from dler.rewards import MathReward
    from dler.trainer import DLERTrainer

    prompt = training_prompt(script_args, training_args)
    training_args.chat_template_kwargs = dict(prompt.chat_template_kwargs) or None  # TRL renders with these
    logger.info("Prompt format %r (answer region %r): %s", prompt.name, prompt.answer_region, prompt.source)
    checkpoint, skipped = find_resume_checkpoint(output_dir)
    for name, problem in skipped:
        logger.warning("Not resuming from %s: %s.", name, problem)
    previous, settings = read_run(output_dir), run_settings(script_args, training_args, model_args)
    if previous and (checkpoint or previous.get("finished")):
        changed = settings_differences(recorded_settings(previous), settings)
        if changed and not script_args.resume_with_changed_settings:
            raise ValueError(
                f"{output_dir} holds a run trained with other settings; continuing it would mix two objectives: "
                + "; ".join(changed)
                + ". Use another --output_dir, restore the settings, or pass --resume_with_changed_settings."
            )
        if changed:
            logger.warning("Resuming with changed settings (--resume_with_changed_settings): %s", "; ".join(changed))
    if previous and previous.get("finished") and previous.get("step", 0) >= training_args.max_steps:
        logger.warning(
            "The run in %s finished at step %d of max_steps=%d: nothing to train (raise --max_steps to continue it).",
            output_dir,
            previous["step"],
            training_args.max_steps,
        )
        return None

    reward = MathReward(
        answer_column=script_args.answer_column,
        num_workers=script_args.reward_workers,
        grader=script_args.grader,
        answer_region=prompt.answer_region,
    )
    rows = select_problems(
        load_rows(script_args.dataset_name, script_args.dataset_split, script_args.dataset_revision),
        script_args.solve_rate_column,
        script_args.max_problems,
    )

    def prepare(rows, problem_column: str, answer_column: str, source: str, needed: int):
        data, skipped = math_prompts(
            rows,
            problem_column=problem_column,
            answer_column=answer_column,
            on_invalid=script_args.invalid_answers,
            reward=reward,
            on_duplicate=script_args.duplicate_problems,
            source=source,
            prompt_format=prompt,
        )
        check_usable_rows(len(data), needed, source, skipped)
        if answer_column != script_args.answer_column:  # the reward reads one column
            data = data.rename_column(answer_column, script_args.answer_column)
        return data

    dataset = prepare(
        rows,
        script_args.problem_column,
        script_args.answer_column,
        script_args.dataset_name,
        script_args.prompts_per_generation,
    )
    eval_dataset = None
    if script_args.eval_dataset_name:
        eval_dataset = prepare(
            load_rows(script_args.eval_dataset_name, script_args.eval_dataset_split),
            script_args.eval_problem_column,
            script_args.eval_answer_column,
            script_args.eval_dataset_name,
            1,
        )
    check_prompts(model_args, training_args, {"training set": dataset, "validation set": eval_dataset}, prompt)
    if model_args.dtype not in (None, "auto") or model_args.attn_implementation:
        training_args.model_init_kwargs = {
            **(training_args.model_init_kwargs or {}),
            **({"dtype": model_args.dtype} if model_args.dtype not in (None, "auto") else {}),
            **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}),
        }
    if training_args.deepspeed and training_args.use_cpu:
        import deepspeed

        # transformers' CPU path sets up torch.distributed but not DeepSpeed's communicator, so ZeRO-3's
        # zero.Init (run while loading the model) would see a world of one process. On GPUs accelerate does this.
        deepspeed.init_distributed(dist_backend="gloo")
    trainer = DLERTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    _add_callbacks(trainer, prompt, callbacks, checkpoint)
    if lock is not None:
        lock.keep()  # training starts: from here on what is in output_dir is the run's, kept even if it fails
    if is_main:
        write_json_atomically(os.path.join(output_dir, RUN_FILE), {"settings": settings, "finished": False})
        write_prompt_file(output_dir, prompt)  # the final model is saved here: `dler eval` evaluates as trained
    if checkpoint:
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            step = json.load(f)["global_step"]
        logger.warning("Resuming from %s at step %d of %d.", checkpoint, step, training_args.max_steps)
    trainer.train(resume_from_checkpoint=checkpoint)  # a requeued Slurm job continues where it stopped
    trainer.save_model()
    finish_run(trainer)
    trainer.accelerator.wait_for_everyone()
    if is_main:
        write_json_atomically(
            os.path.join(output_dir, RUN_FILE),
            {"settings": settings, "finished": True, "step": trainer.state.global_step},
        )
    return trainer


def _add_callbacks(trainer, prompt: PromptFormat, callbacks, checkpoint: str | None = None) -> None:
    """The run's callbacks: metrics.jsonl (its resume marker names `checkpoint`), the prompt into checkpoints, one
    short console line per logging step (the caller's `ProgressCallback`, if any, replaces the bar), then the
    caller's."""
    from transformers.trainer_callback import ProgressCallback

    from dler.run_console import short_console

    short_console(trainer)
    for callback in [MetricsLog(checkpoint=checkpoint), PromptIntoCheckpoints(prompt), *(callbacks or [])]:
        if isinstance(callback, ProgressCallback):
            use_progress_bar(trainer, callback)  # the caller's bar replaces the default one
        else:
            trainer.add_callback(callback)


class PromptIntoCheckpoints(TrainerCallback):
    """Writes the run's prompt settings (dler_prompt.json) into every checkpoint folder, so that `dler eval --model
    <checkpoint>` evaluates it as it was trained."""

    def __init__(self, prompt: PromptFormat):
        self.prompt = prompt

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_prompt_file(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"), self.prompt)
