"""Update-selective merging: every tensor against the formula, both selections, sharded and bf16 checkpoints,
LoRA adapters, and each bad input refused before anything is written."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from dler.merge import CHUNK, REPORT, MergeError, global_cut, merge_checkpoints, merge_state_dicts
from dler.merge_files import Checkpoint


def models(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = {
        "model.embed_tokens.weight": torch.randn(10, 4, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(8, 4, generator=g),
        "model.layers.1.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.norm.weight": torch.ones(4),
        "model.position_ids": torch.arange(6),  # not floating point: keeps the base's value
    }
    base = {k: v.to(dtype) if v.is_floating_point() else v for k, v in base.items()}
    tuned = {k: (v + 0.1 * torch.randn(v.shape, generator=g)).to(v.dtype) if v.is_floating_point() else v + 1
             for k, v in base.items()}  # fmt: skip
    return base, tuned


def by_hand(base, tuned, fraction, scale, per_tensor):
    """The paper's rule written out: sort |delta|, keep the top ceil(fraction * count), scale, add to the base."""
    out, floats = {}, [k for k, v in base.items() if v.is_floating_point()]
    deltas = {k: tuned[k].double() - base[k].double() for k in floats}
    if not per_tensor:
        everything = torch.cat([d.abs().flatten() for d in deltas.values()]).sort(descending=True).values
        cut = everything[int(-(-fraction * everything.numel() // 1)) - 1]
    for k, v in base.items():
        if k not in deltas:
            out[k] = v
            continue
        d = deltas[k]
        if per_tensor:
            cut = d.abs().flatten().sort(descending=True).values[int(-(-fraction * d.numel() // 1)) - 1]
        keep = d.abs() >= cut.to(torch.float32).double()
        out[k] = torch.where(keep, base[k].double() + scale * d, base[k].double()).to(v.dtype)
    return out


@pytest.mark.parametrize("selection", ["global", "tensor"])
def test_state_dict_merge_is_the_papers_rule(selection):
    base, tuned = models()
    merged = merge_state_dicts(base, tuned, top_fraction=0.25, scale=0.7, selection=selection)
    expected = by_hand(base, tuned, 0.25, 0.7, per_tensor=selection == "tensor")
    for name in base:
        torch.testing.assert_close(merged[name], expected[name], rtol=1e-6, atol=1e-6, msg=name)
    changed = sum(int((merged[n] != base[n]).sum()) for n in base if base[n].is_floating_point())
    total = sum(base[n].numel() for n in base if base[n].is_floating_point())
    assert abs(changed / total - 0.25) < 0.01 and torch.equal(merged["model.position_ids"], base["model.position_ids"])


def save_sharded(state, folder, shards=2, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[i::shards]}
        save_file(part, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config or {"architectures": ["Qwen2ForCausalLM"]}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": str(folder)}))
    return folder


def load_folder(folder):
    out = {}
    for file in folder.glob("*.safetensors"):
        out.update(load_file(file))
    return out


@pytest.mark.parametrize("selection", ["global", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_merge_of_sharded_checkpoints_equals_the_in_memory_one(tmp_path, selection, dtype):
    base, tuned = models(dtype=dtype)
    b, t = save_sharded(base, tmp_path / "base"), save_sharded(tuned, tmp_path / "tuned", shards=3)
    report = merge_checkpoints(b, t, tmp_path / "out", top_fraction=0.25, scale=0.7, selection=selection)
    merged, expected = load_folder(tmp_path / "out"), merge_state_dicts(base, tuned, 0.25, 0.7, selection)
    assert set(merged) == set(base)
    for name in base:
        assert merged[name].dtype == base[name].dtype, name  # bf16 in, bf16 out
        torch.testing.assert_close(merged[name], expected[name], rtol=0, atol=0, msg=name)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index == json.loads((t / "model.safetensors.index.json").read_text())  # the tuned model's shards
    assert (tmp_path / "out" / "tokenizer_config.json").read_text() == (t / "tokenizer_config.json").read_text()
    saved = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    counts = [base[n].numel() for n in base if base[n].is_floating_point()]
    kept = -(-sum(counts) // 4) if selection == "global" else sum(-(-c // 4) for c in counts)
    assert saved == report and report["kept"] == kept  # exactly the top 25%, bf16 ties included
    assert set(report["kept_share_by_layer"]) == {
        "model.embed_tokens.weight", "model.layers.0", "model.layers.1", "model.norm.weight"
    }  # fmt: skip
    assert (report["threshold"] is None) == (selection == "tensor")


def test_global_threshold_is_exact_with_ties_and_across_chunks(tmp_path, monkeypatch):
    import dler.merge

    monkeypatch.setattr(dler.merge, "CHUNK", 7)  # slices smaller than a tensor
    values = torch.tensor([0.5, 0.25, 0.25, 0.25, 3.0, 1e-8, 0.0, 2.0, 0.75, 0.125, 0.25, 1.5])
    base = {"a": torch.zeros(6), "b": torch.zeros(6)}
    tuned = {"a": values[:6].clone(), "b": -values[6:].clone()}
    b, t = save_sharded(base, tmp_path / "b", 1), save_sharded(tuned, tmp_path / "t", 1)
    ordered = values.sort(descending=True).values
    for k in range(1, 13):
        threshold, ties = global_cut(Checkpoint.open(b), Checkpoint.open(t), ["a", "b"], k)
        assert threshold == float(ordered[k - 1]), k
        assert int((values > threshold).sum()) + sum(ties.values()) == k  # exactly k kept, ties included
    # k=3 keeps 3.0 (a), 2.0 and 1.5 (b): the threshold 1.5 is b's; k=7 adds 0.75, 0.5 and two of the four 0.25s,
    # taken in name order: both from a, which holds three
    assert global_cut(Checkpoint.open(b), Checkpoint.open(t), ["a", "b"], 3)[1] == {"a": 0, "b": 1}
    assert global_cut(Checkpoint.open(b), Checkpoint.open(t), ["a", "b"], 7)[1] == {"a": 2, "b": 0}
    assert dler.merge.CHUNK < len(values) < CHUNK  # the passes above crossed slice boundaries


def test_lora_adapter_as_the_tuned_model(tmp_path):
    base, _ = models()
    save_sharded(base, tmp_path / "base")
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 4, generator=g), torch.randn(4, 2, generator=g)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file(
        {
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b,
        },
        adapter / "adapter_model.safetensors",
    )
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 8}))
    merge_checkpoints(tmp_path / "base", adapter, tmp_path / "out", top_fraction=0.5, scale=0.7, selection="tensor")
    tuned = dict(base)
    tuned["model.layers.0.self_attn.q_proj.weight"] = base["model.layers.0.self_attn.q_proj.weight"] + (b @ a) * 4
    expected = merge_state_dicts(base, tuned, 0.5, 0.7, "tensor")
    merged = load_folder(tmp_path / "out")
    for name in base:
        torch.testing.assert_close(merged[name], expected[name], rtol=1e-6, atol=1e-6, msg=name)
    assert (tmp_path / "out" / "config.json").exists() and not (tmp_path / "out" / "adapter_config.json").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b, t, d: t.pop("model.norm.weight"), "missing from the tuned model: \\['model.norm.weight'\\]"),
        (lambda b, t, d: t.update({"model.norm.weight": torch.ones(5)}), "tensor shapes differ.*\\(4,\\) vs \\(5,\\)"),
        (lambda b, t, d: d.update(architectures=["LlamaForCausalLM"]), "architectures differ"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, change, message):
    base, tuned = models()
    config = {"architectures": ["Qwen2ForCausalLM"]}
    change(base, tuned, config)
    save_sharded(base, tmp_path / "base")
    save_sharded(tuned, tmp_path / "tuned", config=config)
    with pytest.raises(MergeError, match=message):
        merge_checkpoints(tmp_path / "base", tmp_path / "tuned", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_settings_and_an_existing_output_are_refused(tmp_path):
    base, tuned = models()
    save_sharded(base, tmp_path / "base"), save_sharded(tuned, tmp_path / "tuned")
    for fraction in (0.0, 1.5):
        with pytest.raises(MergeError, match=r"--top-fraction must be in \(0, 1\]"):
            merge_checkpoints(tmp_path / "base", tmp_path / "tuned", tmp_path / "out", top_fraction=fraction)
    with pytest.raises(MergeError, match="--selection must be one of"):
        merge_checkpoints(tmp_path / "base", tmp_path / "tuned", tmp_path / "out", selection="layer")
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    with pytest.raises(MergeError, match="exists; choose another folder or pass --overwrite"):
        merge_checkpoints(tmp_path / "base", tmp_path / "tuned", tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())  # left as it was
    merge_checkpoints(tmp_path / "base", tmp_path / "tuned", tmp_path / "out", overwrite=True)
    with pytest.raises(MergeError, match="--base .*nowhere: no such file or folder"):
        merge_checkpoints(tmp_path / "nowhere", tmp_path / "tuned", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_sweep_writes_one_model_per_cell(tmp_path):
    from dler.merge import merge_sweep

    base, tuned = models()
    save_sharded(base, tmp_path / "base"), save_sharded(tuned, tmp_path / "tuned")
    reports = merge_sweep(tmp_path / "base", tmp_path / "tuned", tmp_path / "grid", [0.1, 0.5], [0.5, 1.0])
    cells = sorted(p.name for p in (tmp_path / "grid").iterdir())
    assert cells == ["top0.1-scale0.5", "top0.1-scale1", "top0.5-scale0.5", "top0.5-scale1"]
    assert [(r["top_fraction"], r["scale"]) for r in reports] == [(0.1, 0.5), (0.1, 1.0), (0.5, 0.5), (0.5, 1.0)]
    full = load_folder(tmp_path / "grid" / "top0.5-scale1")
    expected = merge_state_dicts(base, tuned, 0.5, 1.0)
    assert all(torch.equal(full[n], expected[n]) for n in base)
    with pytest.raises(MergeError, match="top0.1-scale0.5 exists"):
        merge_sweep(tmp_path / "base", tmp_path / "tuned", tmp_path / "grid", [0.1], [0.5])


def test_dler_merge_command_line(tmp_path, capsys):
    from dler.cli import main

    base, tuned = models()
    save_sharded(base, tmp_path / "base"), save_sharded(tuned, tmp_path / "tuned")
    args = ["merge", "--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned")]
    assert main([*args, "--output", str(tmp_path / "one")]) == 0
    assert "25.00% of 108 parameters updated" in capsys.readouterr().out  # 40 + 16 + 32 + 16 + 4 floats
    assert main([*args, "--output", str(tmp_path / "grid"), "--scale", "0.5,1", "--selection", "tensor"]) == 0
    assert sorted(p.name for p in (tmp_path / "grid").iterdir()) == ["top0.25-scale0.5", "top0.25-scale1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--output", str(tmp_path / "one")])
    assert exit_info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err


RUN_FILES = ["dler.lock", "dler_run.json", "metrics.jsonl", "trainer_state.json", "training_args.bin", "training.png"]
MODEL_FILES = [
    "dler_prompt.json",
    "generation_config.json",
    "chat_template.jinja",
    "README.md",
    "special_tokens_map.json",
]


def test_dler_merge_copies_the_model_files_and_none_of_the_runs_bookkeeping(tmp_path):
    """`dler merge` as a user types it, on two folders that are also training runs: the merged folder is a model
    (config, tokenizer, generation config, chat template, the trained prompt, the card), never a run."""
    import subprocess
    import sys

    base, tuned = models()
    b, t = save_sharded(base, tmp_path / "base"), save_sharded(tuned, tmp_path / "tuned")
    for folder in (b, t):
        for name in RUN_FILES + MODEL_FILES:
            (folder / name).write_text(f"{folder.name} {name}")
        (folder / "checkpoint-5").mkdir()
        (folder / "checkpoint-5" / "config.json").write_text("{}")
    out = tmp_path / "merged"
    command = [sys.executable, "-m", "dler", "merge", "--base", str(b), "--tuned", str(t), "--output", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    shards = sorted(p.name for p in t.glob("*.safetensors"))
    assert files == sorted(
        [*shards, *MODEL_FILES, "config.json", "tokenizer_config.json", "model.safetensors.index.json", REPORT]
    )
    assert all((out / name).read_text() == f"tuned {name}" for name in MODEL_FILES)  # the tuned model's, as trained
