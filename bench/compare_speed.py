"""Speed figures of `tunewatch compare` against a bare `model.generate` timing loop, same run.

The model is fixed: a randomly initialised Llama (seed 0, about 26 M parameters by default) with
the tiny-training tokenizer, saved with save_pretrained; its weights do not matter because every
generation has the same fixed length. tunewatch's engine compares the model with itself; the
competitor is the loop everyone writes: warm up once, then time whole `generate` calls
(greedy, min_new_tokens = max_new_tokens) and divide the new tokens by the time. A second bare
figure estimates decode alone as generate(N) minus generate(1). Rounds alternate between the two
so that a machine that slows down mid-run slows both. They must agree within 5 %.
Run: .venv/bin/python bench/compare_speed.py [--device cpu|cuda] [--new-tokens N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine_description, markdown_table, say

AGREEMENT = 0.05
PROMPT = "The quick brown fox jumps over the lazy dog. A careful engineer checks the logs before"


@dataclass(frozen=True, slots=True)
class Figures:
    """Median tokens/s of one round."""

    generate: float  # whole generate calls, new tokens only
    decode: float  # new tokens after the first, per second of decoding
    prefill: float | None = None


def build_model(directory: Path, hidden: int, layers: int) -> int:
    """Save the fixed model and its tokenizer into `directory`; return its parameter count."""
    import torch
    from fixtures.tiny_training import build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def ours(model_dir: Path, args: argparse.Namespace) -> tuple[Figures, Figures, Any]:
    """tunewatch's figures for A and B (the same model twice), and the setup it reports."""
    from tunewatch.plugins.compare.engine import compare_snapshots

    result = compare_snapshots(
        model_dir,
        model_dir,
        test_file=None,
        device=args.device,
        max_new_tokens=args.new_tokens,
        repeats=args.repeats,
        warmup=1,
        batch_size=args.batch_size,
        prompts=[PROMPT],
        examples=0,
    )
    sides = []
    for side in (result.a, result.b):
        speed = side.speed
        assert speed is not None and speed.generate_tokens_per_s is not None
        sides.append(
            Figures(
                speed.generate_tokens_per_s, speed.decode_tokens_per_s, speed.prefill_tokens_per_s
            )
        )
    return sides[0], sides[1], result.setup


class BareLoop:
    """The competitor: a model loaded once and whole generate calls timed with perf_counter."""

    def __init__(self, model_dir: Path, device: str, batch_size: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda:0" if device == "cuda" else "cpu"
        dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # from_pretrained returns the model in eval mode.
        self.model: Any = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=dtype, device_map=self.device
        )
        self.inputs = self.tokenizer([PROMPT] * batch_size, return_tensors="pt").to(self.device)
        self.batch_size = batch_size

    def _generate_s(self, new_tokens: int) -> float:
        sync: Callable[[], None] = (
            self.torch.cuda.synchronize if self.device != "cpu" else (lambda: None)
        )
        sync()
        start = time.perf_counter()
        with self.torch.inference_mode():
            self.model.generate(
                **self.inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        sync()
        return time.perf_counter() - start

    def measure(self, new_tokens: int, repeats: int) -> Figures:
        self._generate_s(new_tokens)  # warm-up
        whole = [self._generate_s(new_tokens) for _ in range(repeats)]
        first = [self._generate_s(1) for _ in range(repeats)]
        generate = statistics.median(self.batch_size * new_tokens / s for s in whole)
        decode_s = statistics.median(whole) - statistics.median(first)
        return Figures(generate, self.batch_size * (new_tokens - 1) / decode_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per round")
    parser.add_argument("--rounds", type=int, default=9, help="alternations of ours and bare")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's, one per core)"
    )
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        # On a shared machine with few cores, OpenMP threads that spin-wait on each other can
        # slow a forward several-fold; one thread gives stable figures there.
        torch.set_num_threads(args.threads)

    print(f"machine: {machine_description()}")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, device {args.device}"
    )
    with tempfile.TemporaryDirectory(prefix="compare-speed-") as tmp:
        model_dir = Path(tmp)
        parameters = build_model(model_dir, args.hidden, args.layers)
        bare = BareLoop(model_dir, args.device, args.batch_size)
        rounds_ours: list[Figures] = []
        rounds_b: list[Figures] = []
        rounds_bare: list[Figures] = []
        for round_number in range(args.rounds):
            say(f"round {round_number + 1}/{args.rounds}: tunewatch, then the bare loop")
            a, b, setup = ours(model_dir, args)
            rounds_ours.append(a)
            rounds_b.append(b)
            rounds_bare.append(bare.measure(args.new_tokens, args.repeats))
    print(
        f"model: Llama, {parameters / 1e6:.1f} M parameters (hidden {args.hidden}, "
        f"{args.layers} layers), {setup.dtype}; batch {args.batch_size}, "
        f"{args.new_tokens} new tokens, {args.repeats} timed repeats x {args.rounds} rounds"
    )
    print(report(rounds_ours, rounds_b, rounds_bare))
    agree = _agrees(rounds_ours, rounds_bare)
    print(f"tunewatch and the bare loop agree within {AGREEMENT:.0%}: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


def _median(rounds: list[Figures], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in rounds))


def _agrees(ours_rounds: list[Figures], bare_rounds: list[Figures]) -> bool:
    ratio = _median(ours_rounds, "generate") / _median(bare_rounds, "generate")
    return abs(ratio - 1) <= AGREEMENT


def report(a: list[Figures], b: list[Figures], bare: list[Figures]) -> str:
    """The table: medians over the rounds, and tunewatch / bare."""

    def row(label: str, field: str) -> list[str]:
        ours_value, bare_value = _median(a, field), _median(bare, field)
        return [
            label,
            f"{ours_value:,.1f}",
            f"{_median(b, field):,.1f}",
            f"{bare_value:,.1f}",
            f"{ours_value / bare_value:.3f}",
        ]

    prefill = f"{statistics.median(r.prefill or 0.0 for r in a):,.1f}"
    rows = [
        row("whole generate (tokens/s)", "generate"),
        row("decode after the 1st token (tokens/s)", "decode"),
        ["prefill (prompt tokens/s)", prefill, "", "not measured", ""],
    ]
    header = ["figure", "tunewatch A", "tunewatch B (same model)", "bare generate loop", "ratio"]
    return markdown_table(header, rows)


if __name__ == "__main__":
    sys.exit(main())
