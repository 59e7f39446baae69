#!/usr/bin/env python3
"""Writes a deterministic HumanEval samples file for the execution benchmark.

Every problem gets 20 completions: the canonical solution, harmless rewrites of it
(extra comments, a `__main__` block, some printing) and 16 perturbed or broken
variants (empty, `return None`, raising, a syntax error, flipped operators and
constants, ...). Some perturbations are equivalent and still pass, some loop until the
timeout: both evaluators see exactly the same programs.

    python3 scripts/bench/humaneval_samples.py PROBLEMS.jsonl.gz OUT.jsonl
"""
import gzip
import json
import sys


def replace_first(text, old, new):
    return text.replace(old, new, 1) if old in text else None


def variants(canonical):
    first_line, _, rest = canonical.partition("\n")
    body = [
        canonical,
        "    # solution\n" + canonical + "\n    # end\n",
        canonical + "\n\nif __name__ == '__main__':\n    raise SystemExit(1)\n",
        "    for _ in range(50):\n        print('noise')\n" + canonical,
        "",
        "    return None\n",
        "    raise NotImplementedError\n",
        "    pass\n",
        "    return (\n",
        "    assert False\n" + canonical,
    ]
    mutations = [
        (" + ", " - "),
        (" < ", " <= "),
        (" > ", " >= "),
        (" == ", " != "),
        ("True", "False"),
        ("[::-1]", "[::1]"),
        ("return ", "return not "),
        ("1", "2"),
        ("0", "1"),
        (" and ", " or "),
    ]
    for old, new in mutations:
        mutated = replace_first(canonical, old, new)
        body.append(mutated if mutated is not None else "    return None\n")
    assert len(body) == 20
    return body


def main():
    problems_path, out_path = sys.argv[1], sys.argv[2]
    opener = gzip.open if problems_path.endswith(".gz") else open
    with opener(problems_path, "rt") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    with open(out_path, "w") as out:
        for problem in problems:
            for completion in variants(problem["canonical_solution"]):
                out.write(json.dumps({"task_id": problem["task_id"], "completion": completion}) + "\n")
    print(f"wrote {len(problems) * 20} samples for {len(problems)} problems to {out_path}")


if __name__ == "__main__":
    main()
