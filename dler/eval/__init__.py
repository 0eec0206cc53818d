"""Evaluation harness: the DLER paper's protocol, pass@k boundaries and length analyses from one command.

    dler eval --model PATH --benchmarks math500,aime24,amc,minerva,olympiad --output-dir runs/eval/my-model
    dler report runs/eval/my-model --baseline runs/eval/r1-1.5b

Python API (modules load lazily; `dler.eval.metrics` needs only numpy):

    from dler.eval import EvalConfig, evaluate, pass_at_k
    from dler.eval.report import report
    results = evaluate(EvalConfig(model="...", output_dir="runs/eval/x", n=16))
"""

_LAZY = {
    "pass_at_k": "dler.eval.metrics",
    "majority_vote": "dler.eval.majority",
    "summarize": "dler.eval.metrics",
    "Benchmark": "dler.eval.benchmarks",
    "BENCHMARKS": "dler.eval.benchmarks",
    "register_benchmark": "dler.eval.benchmarks",
    "EvalConfig": "dler.eval.settings",
    "evaluate": "dler.eval.run",
    "GenerationStore": "dler.eval.store",
    "TransformersBackend": "dler.eval.generate",
    "VLLMBackend": "dler.eval.vllm_backend",
    "SamplingSettings": "dler.eval.generate",
    "find_runs": "dler.eval.run_folders",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dler.eval' has no attribute {name!r}")
