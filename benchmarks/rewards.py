"""Benchmark: grading R1-style responses with dler's pool vs math-verify called naively in the main process.

Builds N synthetic responses offline (prompts x 16 rollouts; long thinking with inline maths, `</think>`, a short
summary and a final boxed answer; correct answers in equivalent forms, wrong answers, corrections, truncated
responses, and a few adversarial ones), then grades them in one run:

  (a) baseline: `verify(parse(f"${gold}$"), parse(response))` on the full response, sequentially, in the main
      process, math-verify defaults (5 s timeouts). What a naive reward function does (the gold gets `$...$`:
      without delimiters math-verify reads `3\sqrt{5}` as 3).
  (b) dler: `MathReward` with its worker pool, in batches of --batch (as GRPO calls it): the last box after
      `</think>` is extracted in the main process, duplicates are graded once, workers run math-verify.
  (c) (--inprocess) the same MathReward pipeline with num_workers=0, to separate the gain of the pool.

Prints the throughput ratio (a)/(b) and the worst batch latency against the batch deadline.

    python benchmarks/rewards.py --n 4096 --workers 2
"""

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

WORDS = (
    "so we need to find the value let me check this again wait maybe I should consider the other case first "
    "hmm that does not look right because the sum of the roots is given by Vieta so the product must be "
    "okay now substitute back into the original equation and simplify both sides carefully"
).split()


def _thinking(rng: random.Random, n_tokens: int) -> str:
    out = []
    for _ in range(n_tokens // 2):
        r = rng.random()
        if r < 0.06:
            a, b, c = rng.randint(2, 9), rng.randint(1, 20), rng.randint(1, 99)
            out.append(f"$x^{a} + {b}x = {c}$")
        elif r < 0.09:
            out.append(f"\\frac{{{rng.randint(1, 30)}}}{{{rng.randint(2, 30)}}}")
        elif r < 0.1:
            out.append(f"\\[ \\sqrt{{{rng.randint(2, 99)}}} \\approx {rng.random() * 10:.3f} \\]")
        else:
            out.append(rng.choice(WORDS))
        if rng.random() < 0.02:
            out.append("\n\nWait,")
    return " ".join(out)


def _problem(rng: random.Random):
    """(gold, [equivalent correct forms], [wrong answers]) of one random answer type."""
    kind = rng.randrange(12)
    a, b = rng.randint(1, 60), rng.randint(2, 40)
    if kind == 0:  # integer (MATH / AIME)
        return str(a * b), [str(a * b)], [str(a * b + 1), str(a * b - 2)]
    if kind == 1:  # AMC float gold
        return float(a * 3), [str(a * 3)], [str(a * 3 + 3)]
    if kind == 2:  # fraction
        while b == a:
            b += 1
        forms = [f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"]
        if b in (2, 4, 5, 8, 10, 20, 25):
            forms.append(repr(a / b))
        return f"\\frac{{{a}}}{{{b}}}", forms, [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}"]
    if kind == 3:  # radical
        k, m = rng.randint(2, 6), rng.choice([2, 3, 5, 6, 7])
        return f"{k}\\sqrt{{{m}}}", [f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}"], [f"{k + 1}\\sqrt{{{m}}}"]
    if kind == 4:  # pi
        return f"\\frac{{{a}\\pi}}{{{b}}}", [f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi"], [f"{a}\\pi"]
    if kind == 5:  # interval
        lo, hi = -a, b
        return f"[{lo}, {hi})", [f"[{lo}, {hi})", f"[{lo},{hi})"], [f"({lo}, {hi}]", f"[{lo}, {hi}]"]
    if kind == 6:  # tuple, order matters
        return f"({a}, {b})", [f"({a}, {b})", f"\\left( {a}, {b} \\right)"], [f"({b}, {a})"]
    if kind == 7:  # sign
        return f"-{a}", [f"-{a}", f"-{a}.0"], [f"{a}"]
    if kind == 8:  # power
        k = rng.randint(5, 20)
        return str(2**k), [str(2**k), f"2^{{{k}}}"], [f"2^{{{k + 1}}}"]
    if kind == 9:  # infinity
        return f"(-\\infty, {a}]", [f"(-\\infty, {a}]", f"(-\\infty,{a}]"], [f"(-\\infty, {a})", f"[{a}, \\infty)"]
    if kind == 10:  # multiple choice
        c = rng.choice("ABCDE")
        return f"\\text{{({c})}}", [f"\\text{{({c})}}", c, f"\\textbf{{({c})}}"], ["A" if c != "A" else "B"]
    return (  # polynomial
        f"x^2 + {2 * a}x + {a * a}",
        [f"x^2 + {2 * a}x + {a * a}", f"(x+{a})^2"],
        [f"x^2 + {a}x + {a * a}"],
    )


ADVERSARIAL = [
    "5^{5^{5^5}}",
    "{" * 5000 + "1" + "}" * 5000,
    "1+" * 50000 + "1",
    "\x00\x00 7 \u202e\ufeff\u200b",
    "\\frac{1}{0}",
    "10^{10^{10}}",
    "(10^{10})!",
    "x^{x^{x^{x^{x^{x^{x}}}}}}",
]


def build(n: int, seed: int = 0, group: int = 16):
    """n responses as (gold, response, is_adversarial), `group` rollouts per prompt."""
    rng = random.Random(seed)
    rows = []
    n_adv = 0
    while len(rows) < n:
        gold, good, bad = _problem(rng)
        for _ in range(group):
            tokens = min(4000, int(rng.lognormvariate(6.9, 0.7)))  # median ~1000 tokens, capped at the budget
            think = _thinking(rng, tokens)
            r = rng.random()
            if r < 0.55:
                final = rng.choice(good)
                tail = f"So the answer is ${final}$.\n\n**Final Answer**\n\\[\n\\boxed{{{final}}}\n\\]"
            elif r < 0.85:
                final = rng.choice(bad)
                tail = f"Therefore the answer is ${final}$.\n\n\\boxed{{{final}}}"
            elif r < 0.9:  # first box wrong, then corrected: the last box counts
                tail = f"First \\boxed{{{rng.choice(bad)}}}, but correcting myself: \\boxed{{{rng.choice(good)}}}"
            elif r < 0.95:  # truncated at the length budget: thinking never closed
                rows.append((gold, "<think>\n" + think, False))
                continue
            else:  # no box
                tail = f"The answer is {rng.choice(good)}."
            rows.append(
                (gold, f"<think>\n{think}\n</think>\n\nLet me summarise. {_thinking(rng, 60)}\n\n{tail}", False)
            )
        if n_adv < len(ADVERSARIAL) and len(rows) > (n_adv + 1) * n // (len(ADVERSARIAL) + 1):
            think = _thinking(rng, 800)
            rows[-1] = (gold, f"<think>\n{think}\n</think>\n\n\\boxed{{{ADVERSARIAL[n_adv]}}}", True)
            n_adv += 1
    return rows[:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096, help="responses to grade")
    parser.add_argument("--workers", type=int, default=None, help="grading processes (default min(4, CPUs))")
    parser.add_argument("--batch", type=int, default=512, help="responses per reward call")
    parser.add_argument("--answer-timeout", type=float, default=5.0, help="MathReward's default")
    parser.add_argument("--batch-timeout", type=float, default=120.0, help="MathReward's default")
    parser.add_argument("--inprocess", action="store_true", help="also time the pipeline with num_workers=0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.ERROR)  # math-verify warns on every timeout of the baseline
    from math_verify import parse, verify

    from dler.rewards import MathReward

    rows = build(args.n, args.seed)
    golds = [g for g, _, _ in rows]
    texts = [t for _, t, _ in rows]
    chars = sorted(len(t) for t in texts)
    print(
        f"{len(rows)} responses, {sum(a for *_, a in rows)} adversarial; length median {chars[len(chars) // 2]} "
        f"chars, max {chars[-1]} chars (~{chars[-1] // 4} tokens)"
    )

    # (b) dler pool, warmed up first: in training the pool starts once and lives for the whole run
    reward = MathReward(num_workers=args.workers, answer_timeout=args.answer_timeout, batch_timeout=args.batch_timeout)
    t0 = time.perf_counter()
    reward.pool.start(wait_ready=True)
    startup = time.perf_counter() - t0
    batch_times, scores = [], []
    t0 = time.perf_counter()
    for i in range(0, len(rows), args.batch):
        tb = time.perf_counter()
        scores += reward(prompts=None, completions=texts[i : i + args.batch], answer=golds[i : i + args.batch])
        batch_times.append(time.perf_counter() - tb)
    pool_time = time.perf_counter() - t0
    pool_stats = dict(reward.pool.stats)
    status = dict(reward.stats)
    reward.close()

    # (a) naive sequential math-verify on full responses, main process
    parse("\\boxed{1}")  # warm-up (import and parser construction) outside the timing
    base_scores, base_adv = [], 0.0
    t0 = time.perf_counter()
    for gold, text, adversarial in rows:
        ta = time.perf_counter()
        base_scores.append(float(verify(parse(f"${gold}$"), parse(text))))
        if adversarial:
            base_adv += time.perf_counter() - ta
    base_time = time.perf_counter() - t0

    inproc_time = None
    if args.inprocess:
        local = MathReward(num_workers=0)
        t0 = time.perf_counter()
        for i in range(0, len(rows), args.batch):
            local(completions=texts[i : i + args.batch], answer=golds[i : i + args.batch])
        inproc_time = time.perf_counter() - t0

    n = len(rows)
    workers = pool_stats["started"] - pool_stats["killed"] - pool_stats["died"]
    print()
    print(
        '(a) baseline: verify(parse(f"${gold}$"), parse(full response)), sequential, main process, math-verify defaults'
    )
    print(f"    {base_time:8.2f} s  {n / base_time:8.1f} responses/s  (of which adversarial: {base_adv:.2f} s)")
    if inproc_time is not None:
        print("(c) dler in-process: last box after </think>, dedup + cache, math-verify in this process")
        print(f"    {inproc_time:8.2f} s  {n / inproc_time:8.1f} responses/s")
    print(f"(b) dler pool: {workers} worker processes, batches of {args.batch}, extraction in the main process")
    print(
        f"    {pool_time:8.2f} s  {n / pool_time:8.1f} responses/s  (pool start-up {startup:.2f} s, once per run,"
        " not included)"
    )
    print()
    print(
        f"throughput ratio (a)/(b): {base_time / pool_time:.2f}x   "
        f"without the baseline's adversarial time: {(base_time - base_adv) / pool_time:.2f}x   (target >= 1.8x)"
    )
    print(
        f"worst batch latency: {max(batch_times):.2f} s of a {args.batch_timeout:g} s batch deadline "
        f"(median {sorted(batch_times)[len(batch_times) // 2]:.2f} s)"
    )
    print(f"pool: {pool_stats}")
    print(f"statuses: {status}")
    agree = sum(a == b for a, b in zip(scores, base_scores, strict=True))
    print(
        f"accuracy dler {sum(scores) / n:.3f} vs baseline {sum(base_scores) / n:.3f}; same verdict on {agree}/{n} "
        "(the baseline also grades unclosed thinking and merges first and last boxes)"
    )


if __name__ == "__main__":
    main()
