"""`DLERTrainer`: TRL's `GRPOTrainer` with the DLER recipe.

Training batches are decided first and scored once ("decide, then score"): each dynamic-sampling round runs TRL's
`_generate` and the reward functions only; the length penalty shapes the rewards, groups without signal are
dropped, and the kept groups are cut to the batch size and balanced across ranks as plain data. Then TRL's own
`_generate_and_score_completions` runs once on exactly that batch, replaying the cached generations and rewards
through its `_generate` and `_calculate_rewards` hooks, so log-probs, padding, `num_items_in_batch`, logging and every
output key are TRL's, and no forward pass is spent on a dropped group. DLER then replaces the advantages with its
batch-wise normalised ones. The rounds live in `dler/rounds.py`, their state in `dler.sampling.SamplingState`; the
scoring (correctness shaped, other reward functions added after it, `dler.reward_roles`) in `dler/scoring.py`.
Generating less (docs/dynamic_sampling.md) sizes rounds from the kept fraction, carries surplus groups to later
batches and skips prompts without recent signal. Clip-higher is TRL's own `epsilon_high`.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import torch
from accelerate.utils import gather
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import is_async_callable

from dler.config import DLERConfig
from dler.kl_loss import KLEstimatorLoss
from dler.penalties import LengthPenalty
from dler.reward_guard import GuardedReward
from dler.reward_roles import correctness_columns, reward_name
from dler.rounds import DynamicSampling, DynamicSamplingExhausted, Replay
from dler.run_logs import name_base_model
from dler.runs import leave_process_group_at_exit, write_manifest
from dler.sampling import RoundScores, SamplingState
from dler.scoring import RewardScoring

__all__ = ["DLERTrainer", "DynamicSamplingExhausted"]

logger = logging.getLogger(__name__)

STATE_FILE = "dler_state.json"  # the run's sampling state and counters: the same on every rank
RANK_FILE = "dler_rank{rank}.pt"  # per rank: the penalty's state and the rows of the groups this rank carries
STREAM_SEED_OFFSET = 7919  # DLER's prompt stream is independent of TRL's own sampler
# TRL's scale_rewards for each advantage normalisation (DLER's whitening has none: TRL's group flag for its metrics)
TRL_SCALE_REWARDS = {"batch": "group", "group": "group", "batch_std": "batch", "none": "none"}


def _is_plain_function(func) -> bool:
    return callable(func) and not isinstance(func, torch.nn.Module) and not is_async_callable(func)


class CloseRewardFunctions(TrainerCallback):
    """Stop reward functions' worker pools (e.g. `dler.rewards.MathReward`) when training ends; they restart lazily."""

    def __init__(self, reward_funcs):
        self.reward_funcs = reward_funcs

    def on_train_end(self, args, state, control, **kwargs):
        for func in self.reward_funcs:
            if callable(getattr(func, "close", None)):
                func.close()


class DLERTrainer(KLEstimatorLoss, DynamicSampling, RewardScoring, GRPOTrainer):
    """GRPO with DLER: truncation reward shaping, batch-wise advantage normalisation, clip-higher, dynamic sampling
    and difficulty-aware budgets. Takes `GRPOTrainer`'s arguments in its order (a [`DLERConfig`] as `args`; at least
    one reward function), and optionally a keyword-only `penalty` instance (a [`LengthPenalty`]) that overrides the
    config's `penalty` / `penalty_kwargs`.
    """

    _tag_names = ["trl", "grpo", "dler"]
    _replay: Replay | None = None  # also on a trainer built without __init__ (TRL's tests call hooks on such ones)

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: DLERConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        tools=None,
        rollout_func=None,
        environment_factory=None,
        *,
        penalty=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = DLERConfig(f"{name.split('/')[-1]}-DLER")
        unsupported = {"tools": tools, "environment_factory": environment_factory, "rollout_func": rollout_func}
        self._check_before_loading(args, reward_funcs, train_dataset, penalty, unsupported)
        self.penalty = penalty or args.build_penalty()
        super().__init__(
            model,
            reward_funcs,
            args,
            train_dataset,
            eval_dataset,
            processing_class,
            reward_processing_classes,
            callbacks,
            optimizers,
            quantization_config,
            peft_config,
            tools,
            rollout_func,
            environment_factory,
        )
        self._refuse_unsupported(["a vision-language model"] if self._is_vlm else [])
        # TRL's names and weights, the same as checked before loading: the correctness columns of `rewards_per_func`
        self._correctness_columns = correctness_columns(
            self.reward_func_names, args.correctness_rewards, self.reward_weights.tolist()
        )
        # TRL computes (and DLER replaces) advantages from `scale_rewards`; its `frac_reward_zero_std` metric reads it
        self.scale_rewards = TRL_SCALE_REWARDS[args.advantage_normalization]
        self.reward_funcs = [  # plain synchronous functions fail naming themselves and the sample
            GuardedReward(func, name, timeout=args.reward_timeout) if _is_plain_function(func) else func
            for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
        ]
        self.add_callback(CloseRewardFunctions(self.reward_funcs))
        leave_process_group_at_exit()  # any script, not only the recipes, exits cleanly on every rank
        self._budget_bands = args.budget_bands
        self._stream_dataset: Dataset | None = None  # the training set as TRL's dataloader sees it, on first use
        self.sampling = SamplingState(
            args.seed + STREAM_SEED_OFFSET,
            shuffle=self.shuffle_dataset,
            max_carry_age=args.max_carry_age,
            skip_after=args.skip_after if args.skip_no_signal_prompts else None,
            skip_exploration=args.skip_exploration,
        )
        self._prompts_truncated = 0  # prompts cut to max_prompt_length over the run
        self._kl_capture: list | None = None  # policy log-probs seen while TRL computes the loss
        self._replay: Replay | None = None  # set while TRL scores a decided batch
        self._eval_scores: RoundScores | None = None  # what `_calculate_rewards` scored in TRL's last eval call

    @classmethod
    def _check_before_loading(cls, args, reward_funcs, train_dataset, penalty, unsupported: dict) -> None:
        """What can be refused before any model loads: the config's type, streaming data with dynamic sampling, the
        penalty's type, tools and environments, and the reward functions' roles."""
        if not isinstance(args, DLERConfig):
            raise TypeError(f"DLERTrainer needs a DLERConfig as `args`, got {type(args).__name__}")
        if args.dynamic_sampling and isinstance(train_dataset, IterableDataset):
            raise ValueError(
                "dynamic_sampling draws extra prompts by dataset index, so it needs a map-style `datasets.Dataset`; "
                "got an IterableDataset (streaming). Load the data without streaming (`load_dataset(..., "
                "streaming=False)`, or `Dataset.from_list(list(stream))` for a stream that fits in memory), or set "
                "dynamic_sampling=False to train every group as GRPO does."
            )
        if penalty is not None and not isinstance(penalty, LengthPenalty):
            raise TypeError(f"penalty must be a dler.penalties.LengthPenalty, got {type(penalty).__name__}")
        cls._refuse_unsupported([name for name, value in unsupported.items() if value])
        funcs = [] if reward_funcs is None else reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        correctness_columns([reward_name(f) for f in funcs], args.correctness_rewards, args.reward_weights)

    @staticmethod
    def _refuse_unsupported(features: list[str]) -> None:
        if features:
            raise ValueError(
                f"DLERTrainer decides each batch from text rollouts before TRL scores it, which {', '.join(features)} "
                "would bypass (tool calls, environments and images are generated and scored inside TRL's own call). "
                "Train those with trl.GRPOTrainer."
            )

    # ------------------------------------------------------------------ prompts and sampling
    def _tokenize_prompts(self, prompts: list):
        """TRL's tokenisation (chat template included), then the `max_prompt_length` cap: a longer prompt keeps its
        last tokens, as the released run's left truncation. Counted over every rank and logged."""
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        cap = self.args.max_prompt_length
        if cap is None:
            return prompt_ids, images, multimodal_fields
        if images is not None or multimodal_fields:
            raise ValueError("max_prompt_length cannot cut multimodal prompts (their image tokens); unset it")
        cut = [len(ids) > cap for ids in prompt_ids]
        prompt_ids = [list(ids[-cap:]) if long else ids for ids, long in zip(prompt_ids, cut, strict=True)]
        counts = gather(torch.tensor([[sum(cut), len(cut)]], device=self.accelerator.device)).sum(dim=0)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["dler/prompt_truncated_frac"].append(counts[0].item() / max(counts[1].item(), 1))
        if mode == "train":  # evaluation leaves the run's counters alone
            self._prompts_truncated += int(counts[0]) // self.num_generations
            self._metrics[mode]["dler/prompts_truncated_total"] = [float(self._prompts_truncated)]
        return prompt_ids, images, multimodal_fields

    def _generate(self, prompts: list):
        """TRL's generation, or, while TRL scores a decided batch, that batch's cached generations."""
        if self._replay is None:
            return super()._generate(prompts)
        replay = self._replay
        replay.call("_generate")
        if prompts != [x["prompt"] for x in replay.rows("inputs")]:
            raise RuntimeError("TRL asked to generate for prompts other than the decided batch's")
        logprobs = replay.rows("logprobs") if replay.groups[0]["logprobs"] is not None else None
        completions = replay.rows("completions")
        return replay.rows("prompt_ids"), replay.rows("completion_ids"), None, completions, logprobs, {}, None, []

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        """TRL's generation; evaluation samples at `eval_temperature` (TRL would use the training temperature)."""
        temperature = self.args.eval_temperature
        if self.model.training or temperature is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, **kwargs)
        backend = getattr(self, "vllm_generation", None) if self.use_vllm else None
        saved = (self.temperature, getattr(self, "generation_kwargs", None), getattr(self, "generation_config", None))
        self.temperature = temperature
        if backend is not None:
            saved_backend, backend.temperature = backend.temperature, temperature
        else:
            self.generation_kwargs = {**self.generation_kwargs, "temperature": temperature}
            self.generation_config = copy.deepcopy(self.generation_config)
            self.generation_config.temperature = temperature
        try:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, **kwargs)
        finally:
            self.temperature, self.generation_kwargs, self.generation_config = saved
            if backend is not None:
                backend.temperature = saved_backend

    # ------------------------------------------------------------------ batches: decide, then score
    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return self._score_eval(inputs)
        trained, quota = self._decide_batch(inputs)
        return self._score_batch(trained, quota)

    def _score_eval(self, inputs):
        """TRL's evaluation call, with DLER's advantages (so TRL's eval loss is DLER's) on plain correctness."""
        self._eval_scores = None
        output = super()._generate_and_score_completions(inputs)
        scores, group_size = self._eval_scores, self.num_generations_eval
        if scores is None:
            raise RuntimeError("TRL's evaluation call did not compute rewards through `_calculate_rewards`")
        advantages = self._advantages(scores, group_size)
        self._relog_advantages(advantages)
        n = len(inputs)
        output["advantages"] = advantages[self.accelerator.process_index * n :][:n].to(self.accelerator.device)
        self._log_scores("eval", [scores], group_size)
        return output

    def _relog_advantages(self, values: torch.Tensor) -> None:
        """Show DLER's advantages in TRL's completions table instead of the ones TRL computed from raw rewards."""
        log = self._logs["advantages"]
        n = min(len(values), len(log))
        for _ in range(n):
            log.pop()
        log.extend(values[len(values) - n :].tolist())

    # ------------------------------------------------------------------ checkpoints
    def dler_state_dict(self) -> dict:
        """What DLER adds to a run's state that is the same on every rank (saved as `dler_state.json`)."""
        return {**self.sampling.state_dict(), "prompts_truncated": self._prompts_truncated}

    def load_dler_state_dict(self, state: dict) -> None:
        self.sampling.load_state_dict(state)
        self._prompts_truncated = state.get("prompts_truncated", 0)

    def rank_state_dict(self) -> dict:
        """What differs between ranks: the penalty's state (it sees this rank's groups) and the carried groups."""
        return {
            "num_processes": self.accelerator.num_processes,
            "penalty": self.penalty.state_dict(),
            "carry": self.sampling.carry_state_dict(),
        }

    def load_rank_state_dict(self, state: dict) -> None:
        if state["carry"] and state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"The checkpoint carries groups generated on {state['num_processes']} ranks; this run has "
                f"{self.accelerator.num_processes}. Resume on as many ranks, or set max_carry_age=0."
            )
        self.penalty.load_state_dict(state["penalty"])
        self.sampling.load_carry_state_dict(state["carry"])

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's card, naming the base model (`config._name_or_path`) where TRL writes "None": a local path."""
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero():
            name_base_model(self.args.output_dir, self.model.config._name_or_path)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        os.makedirs(folder, exist_ok=True)
        if self.args.should_save:
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(self.dler_state_dict(), f, indent=2)
        torch.save(self.rank_state_dict(), os.path.join(folder, RANK_FILE.format(rank=self.accelerator.process_index)))
        self.accelerator.wait_for_everyone()  # every rank has written: the checkpoint is whole
        if self.args.should_save:
            write_manifest(folder, self.state.global_step)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        rank_path = os.path.join(checkpoint, RANK_FILE.format(rank=self.accelerator.process_index))
        if not os.path.exists(path):
            logger.warning("Checkpoint %s has no %s: DLER's sampling state starts fresh.", checkpoint, STATE_FILE)
            return
        with open(path) as f:
            self.load_dler_state_dict(json.load(f))
        if os.path.exists(rank_path):
            self.load_rank_state_dict(torch.load(rank_path, weights_only=True))
        else:
            logger.warning("Checkpoint %s has no %s: the penalty's state starts fresh.", checkpoint, rank_path)

    def _issue_warnings_after_load(self, load_result):
        """transformers' missing-keys warning, less the keys of tied weights (a checkpoint of a model with
        `tie_word_embeddings` holds `lm_head.weight` only as the embeddings): a real missing key still warns."""
        tied = tied_missing_keys(self.model, load_result.missing_keys)
        super()._issue_warnings_after_load(
            load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied])
        )


def tied_missing_keys(model, missing_keys) -> set[str]:
    """The keys in `missing_keys` whose parameter is the very tensor of a parameter that was loaded (tied weights):
    loading that one loaded them. A "module." prefix (a wrapped model's keys) is ignored."""
    names_of = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    missing = {key.removeprefix("module.") for key in missing_keys}
    tied = set()
    for names in names_of.values():
        if len(names) > 1 and any(name not in missing for name in names):
            tied.update(name for name in names if name in missing)
    return {key for key in missing_keys if key.removeprefix("module.") in tied}
