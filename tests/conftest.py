"""Shared fixtures: the tiny offline model (built once per session) and small prompt datasets."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A warmed-up tiny Qwen2 model and tokenizer saved to disk, loaded by path like a hub id."""
    from dler.demo.tiny import save_tiny

    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "model"))
