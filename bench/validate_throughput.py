"""Validation throughput on real data: tunewatch's validator against a cookbook-style one.

The data is real (shared/data/datasets: the LLaMA-Factory Alpaca, KTO and v1 SFT demos), turned
into OpenAI chat rows and scaled to --rows by repetition with light perturbation (two words
swapped and a number added in every message of every copy, so no message text repeats exactly
and exact dedup alone cannot collapse them). Both validators use the same real tokenizer, a BPE
trained on the data with `tokenizers` and saved as PreTrainedTokenizerFast. tunewatch runs with
near-duplicates and test-file leakage on (the test file: 500 GSM8K rows). The baseline is written
like the OpenAI cookbook's checker: one pass, format checks, one tokenizer call per message,
sha256 dedup. A third run only batch-encodes every message (no checks): the least time any
validator that counts these tokens needs here. Each runs in its own child process, which
reports its CPU time and peak RSS.
Run: .venv/bin/python bench/validate_throughput.py [--rows N] [--repeat N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_description, markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "datasets"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("value") or p.get("text") or "") for p in content)
    return str(content)


def real_conversations(data_dir: Path) -> list[list[dict[str, str]]]:
    """OpenAI chat conversations from three real datasets."""
    convs: list[list[dict[str, str]]] = []
    for row in json.loads((data_dir / "llamafactory_alpaca_en_demo.json").read_text()):
        prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
        convs.append(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
        )
    for row in json.loads((data_dir / "llamafactory_kto_en_demo.json").read_text()):
        convs.append([{"role": m["role"], "content": _text(m["content"])} for m in row["messages"]])
    with (data_dir / "llamafactory_v1_sft_demo.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            convs.append(
                [{"role": m["role"], "content": _text(m["content"])} for m in row["messages"]]
            )
    return convs


def scaled_file(convs: list[list[dict[str, str]]], rows: int, path: Path) -> None:
    """Copies of the conversations in which every message is perturbed, so that no message
    text repeats exactly: nothing is cheaper for being seen before."""
    rng = random.Random(0)
    with path.open("w") as out:
        for i in range(rows):
            conv = [dict(m) for m in convs[i % len(convs)]]
            for message in conv:  # light perturbation: swap two words, add a number
                words = message["content"].split()
                if len(words) > 3:
                    a, b = rng.randrange(len(words)), rng.randrange(len(words))
                    words[a], words[b] = words[b], words[a]
                message["content"] = " ".join(words) + f" ({i})"
            out.write(json.dumps({"messages": conv}) + "\n")


def train_tokenizer(convs: list[list[dict[str, str]]], directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=8000, special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    tok.train_from_iterator((m["content"] for c in convs for m in c), trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.save_pretrained(directory)


def test_file(data_dir: Path, path: Path) -> None:
    with (data_dir / "gsm8k_train.jsonl").open() as f, path.open("w") as out:
        for _, line in zip(range(500), f, strict=False):
            out.write(line)


# -- the two validators, each run in a child process ---------------------------------------------


def run_tunewatch(data: Path, tokenizer: Path, test: Path) -> dict[str, Any]:
    from tunewatch.plugins.validate.validate import validate_file

    report = validate_file(data, tokenizer=str(tokenizer), test_file=test)
    return {
        "examples": report.examples,
        "score": report.score,
        "near_groups": len(report.near_duplicate_groups),
        "exact_groups": len(report.duplicate_groups),
    }


def run_cookbook(data: Path, tokenizer: Path, test: Path) -> dict[str, Any]:
    """Format checks, one tokenizer call per message, sha256 dedup: the cookbook's approach."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    errors: dict[str, int] = {}
    seen: set[str] = set()
    duplicates = 0
    tokens: list[int] = []
    examples = 0
    with data.open() as f:
        for line in f:
            examples += 1
            ex = json.loads(line)
            messages = ex.get("messages")
            if not isinstance(messages, list) or not messages:
                errors["missing_messages_list"] = errors.get("missing_messages_list", 0) + 1
                continue
            for m in messages:
                if "role" not in m or "content" not in m:
                    errors["message_missing_key"] = errors.get("message_missing_key", 0) + 1
                if m.get("role") not in ("system", "user", "assistant", "function", "tool"):
                    errors["unrecognized_role"] = errors.get("unrecognized_role", 0) + 1
                n = 0
                if isinstance(m.get("content"), str):
                    n = len(tok(m["content"])["input_ids"])
                tokens.append(n)
            if not any(m.get("role") == "assistant" for m in messages):
                errors["example_missing_assistant_message"] = (
                    errors.get("example_missing_assistant_message", 0) + 1
                )
            digest = hashlib.sha256(line.encode()).hexdigest()
            if digest in seen:
                duplicates += 1
            seen.add(digest)
    return {"examples": examples, "errors": sum(errors.values()), "duplicates": duplicates}


def run_tokens_only(data: Path, tokenizer: Path, test: Path) -> dict[str, Any]:
    """No checks at all: every message through the fast tokenizer's batch encoder (Rust, all
    cores). What any validator that counts tokens with this tokenizer needs at least."""
    from transformers import AutoTokenizer

    backend = AutoTokenizer.from_pretrained(str(tokenizer)).backend_tokenizer
    examples = tokens = 0
    with data.open() as f:
        while batch := [json.loads(line) for _, line in zip(range(512), f, strict=False)]:
            examples += len(batch)
            texts = [m["content"] for row in batch for m in row["messages"]]
            tokens += sum(map(len, backend.encode_batch_fast(texts, add_special_tokens=False)))
    return {"examples": examples, "tokens": tokens}


RUNNERS = {"tunewatch": run_tunewatch, "cookbook": run_cookbook, "tokens": run_tokens_only}


def child(which: str, data: Path, tokenizer: Path, test: Path) -> None:
    start = time.perf_counter()
    result = RUNNERS[which](data, tokenizer, test)
    result["seconds"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    print(json.dumps(result))


def measure(which: str, data: Path, tokenizer: Path, test: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", which, str(data), str(tokenizer), str(test)],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _load_average() -> str:
    """Other work on the machine slows the two-core tunewatch more than the one-core baseline."""
    loadavg = Path("/proc/loadavg")
    return f"load average {loadavg.read_text().split()[0]}" if loadavg.exists() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best of each side")
    parser.add_argument("--child", nargs=4, metavar=("WHICH", "DATA", "TOKENIZER", "TEST"))
    args = parser.parse_args()
    if args.child:
        which, data, tokenizer, test = args.child
        child(which, Path(data), Path(tokenizer), Path(test))
        return
    print(machine_description())
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        convs = real_conversations(args.data_dir)
        data = tmp_path / "data.jsonl"
        scaled_file(convs, args.rows, data)
        train_tokenizer(convs, tmp_path / "tokenizer")
        test = tmp_path / "test.jsonl"
        test_file(args.data_dir, test)
        size_mb = data.stat().st_size / 1e6
        print(f"{args.rows:,} rows ({size_mb:.0f} MB) from {len(convs):,} real conversations")
        # Rounds interleave the sides, so a busy spell on the machine hits them all alike;
        # each side's fastest round is reported.
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for which in RUNNERS:
                result = measure(which, data, tmp_path / "tokenizer", test)
                if which not in best or result["seconds"] < best[which]["seconds"]:
                    best[which] = result
    ours, theirs, floor = best["tunewatch"], best["cookbook"], best["tokens"]
    assert ours["examples"] == theirs["examples"] == floor["examples"] == args.rows
    baseline_rate = theirs["examples"] / theirs["seconds"]
    rows = []
    sides = (
        ("cookbook-style baseline", theirs),
        ("tunewatch validate", ours),
        ("tokenizer alone (no checks)", floor),
    )
    for name, r in sides:
        rate = r["examples"] / r["seconds"]
        rows.append(
            [
                name,
                f"{rate:,.0f}",
                f"{r['seconds']:.1f}",
                f"{r['cpu_seconds']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{rate / baseline_rate:.2f}x",
            ]
        )
    header = ["validator", "examples/s", "seconds", "CPU s", "peak RSS MB", "ratio"]
    print(f"best of {args.repeat} round(s); {_load_average()}")
    print(markdown_table(header, rows))
    print(
        f"tunewatch found {ours['exact_groups']} exact and {ours['near_groups']} near-duplicate "
        f"groups (score {ours['score']}); the baseline {theirs['duplicates']} sha256 duplicates"
    )


if __name__ == "__main__":
    main()
