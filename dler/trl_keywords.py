"""The keyword arguments TRL passes to a reward function besides the dataset's columns: one tuple that the reward
guard and the math reward both read (a neutral home, so that neither imports the other)."""

TRL_CONTROL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")
