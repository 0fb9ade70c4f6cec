"""A real, tiny `transformers.Trainer` run on CPU in seconds: the demo trains it, and the tests and
benchmarks use it as ground truth for what tunewatch parses. Runs only in its own process (it
imports torch): never in the daemon.
"""

from __future__ import annotations

import os

# No network exists where these run: make any accidental hub lookup fail fast instead of hanging.
# Set before huggingface_hub is imported (it reads the variable once) and inherited by children.
os.environ["HF_HUB_OFFLINE"] = "1"

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

# If a test imported transformers before this module, the variable above came too late.
hub_constants.HF_HUB_OFFLINE = True

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
VOCAB_SIZE = 320
BLOCK_SIZE = 32
TRAIN_BATCH_SIZE = 4
STATUS_FILE_NAME = "training_status.json"

# Hand-written so the fixture needs no download; varied enough for BPE to learn real merges.
CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A small model can still learn the shape of a sentence.",
    "The cat sat on the warm mat and watched the rain fall.",
    "Every morning the baker opens the shop before sunrise.",
    "Training a language model means predicting the next word.",
    "The river runs quietly past the old stone bridge.",
    "She wrote a long letter to her friend across the sea.",
    "Learning rates that are too large make the loss explode.",
    "The children played in the park until the sun went down.",
    "A good tokenizer splits words into useful pieces.",
    "He planted tomatoes, beans and carrots in the garden.",
    "The train left the station exactly on time.",
    "Clouds gathered over the hills and the wind grew cold.",
    "Our team reviewed the results and wrote a short report.",
    "The library keeps thousands of books on tall shelves.",
    "Fresh bread smells wonderful when it comes out of the oven.",
    "The students asked many questions after the lecture.",
    "A careful engineer checks the logs before changing anything.",
    "The dog barked at the mail carrier every single day.",
    "Stars appeared one by one as the evening grew dark.",
    "The market was busy with people buying fruit and fish.",
    "She fixed the broken chair with glue and a few nails.",
    "The museum opened a new hall for ancient pottery.",
    "Rain on the window made a soft and steady sound.",
    "The pilot announced that the plane would land soon.",
    "He forgot his umbrella and got wet on the way home.",
    "The garden was full of roses, tulips and daisies.",
    "We watched the waves crash against the rocky shore.",
    "The teacher smiled and wrote the answer on the board.",
    "A cup of tea is a fine way to start the day.",
    "The old clock in the hall struck twelve at midnight.",
    "Birds sang in the trees while the farmer fed the hens.",
    "The mountain path was steep, narrow and covered in snow.",
    "They counted the coins and found exactly one hundred.",
    "The lamp flickered twice and then the room went dark.",
    "My neighbour grows the largest pumpkins in the village.",
)

# Held out from training so the eval loss measures something the model did not memorise.
EVAL_CORPUS: tuple[str, ...] = (
    "The fox and the cat watched the rain from the bridge.",
    "A baker wrote a short letter before the train left.",
    "The students planted roses in the garden by the river.",
    "Every evening the wind grew cold over the old village.",
)


@dataclass(frozen=True)
class TrainResult:
    """What a test needs to compare tunewatch's view of a run against the truth."""

    output_dir: Path
    global_step: int
    log_history: list[dict[str, Any]]


class _BlockDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Fixed-length causal-LM blocks, so no padding or attention masking is needed."""

    def __init__(self, blocks: list[list[int]]) -> None:
        self._blocks = blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self._blocks[index], dtype=torch.long)
        # The model shifts labels itself, so labels are the inputs.
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def build_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on CORPUS, save it to `directory` and return it.

    Byte-level means every string round-trips exactly and `<unk>` is never produced.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS + EVAL_CORPUS, trainer=trainer)
    # Prepend BOS the way Llama tokenizers do, so downstream code sees a familiar layout.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS))],
    )
    # transformers leaves this constructor unannotated (*args, **kwargs).
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
    )
    directory.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(directory)
    return wrapped


def build_tiny_llama(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised, reproducible Llama small enough to train in seconds on CPU."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=BLOCK_SIZE * 2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def build_blocks(tokenizer: PreTrainedTokenizerFast, sentences: Sequence[str]) -> list[list[int]]:
    """Concatenate the sentences (BOS ... EOS each) and cut the stream into BLOCK_SIZE blocks."""
    stream: list[int] = []
    for sentence in sentences:
        stream.extend(tokenizer(sentence)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    usable = len(stream) - len(stream) % BLOCK_SIZE
    return [stream[start : start + BLOCK_SIZE] for start in range(0, usable, BLOCK_SIZE)]


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so a concurrent reader sees the old file or the new one, never half of one."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class StatusFileCallback(TrainerCallback):
    """Keep `<output_dir>/training_status.json` current, as hand-written training scripts do."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_loss: float | None = None

    def _write(self, status: str, state: TrainerState) -> None:
        write_json_atomically(
            self.path,
            {
                "status": status,
                "current_step": state.global_step,
                "total_steps": state.max_steps,
                "loss": self._last_loss,
                "pid": os.getpid(),
            },
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last_loss = None
        self._write("training", state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or "loss" not in logs:
            return
        self._last_loss = logs["loss"]
        self._write("training", state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._write("completed", state)


class LrBlowUpCallback(TrainerCallback):
    """Multiply the learning rate by `factor` from optimizer step `at_step` on, to force divergence.

    The scheduler's base learning rates are scaled too, otherwise its next step would recompute
    the original schedule and silently undo the blow-up.
    """

    def __init__(self, at_step: int, factor: float = 1000.0) -> None:
        self.at_step = at_step
        self.factor = factor
        self._applied = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._applied = False

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        # global_step counts finished steps, so the step about to run is global_step + 1.
        if self._applied or state.global_step + 1 < self.at_step or optimizer is None:
            return
        self._applied = True
        for group in optimizer.param_groups:
            group["lr"] *= self.factor
        if lr_scheduler is None:
            return
        lr_scheduler.base_lrs = [lr * self.factor for lr in lr_scheduler.base_lrs]
        # Trainer logs get_last_lr(); refresh it so the log shows the rate this step really uses.
        lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous setting afterwards.

    The model is far too small to gain from parallelism, and on small shared CI machines two
    OpenMP threads occasionally stall a 0.5 s run for 5-30 s; one thread keeps it predictable.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_tiny_run(
    output_dir: Path,
    *,
    max_steps: int = 30,
    logging_steps: int = 1,
    save_steps: int = 10,
    eval_steps: int | None = 10,
    callbacks: Sequence[TrainerCallback] = (),
    learning_rate: float = 5e-3,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    write_status_file: bool = False,
    report_to: Sequence[str] = (),
) -> TrainResult:
    """Train the tiny Llama with `transformers.Trainer` into `output_dir` and return the truth.

    The tokenizer is saved into `output_dir` and handed to the Trainer, so every
    `checkpoint-N/` holds the tokenizer next to `model.safetensors` and `trainer_state.json`.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    tokenizer = build_tokenizer(output_dir)
    model = build_tiny_llama(tokenizer, seed=seed)
    train_dataset = _BlockDataset(build_blocks(tokenizer, CORPUS))
    eval_dataset = _BlockDataset(build_blocks(tokenizer, EVAL_CORPUS)) if eval_steps else None
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=TRAIN_BATCH_SIZE,
        per_device_eval_batch_size=TRAIN_BATCH_SIZE,
        learning_rate=learning_rate,
        max_grad_norm=max_grad_norm,
        logging_strategy="steps",
        logging_steps=logging_steps,
        save_strategy="steps",
        save_steps=save_steps,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        # e.g. ["tensorboard"]: transformers' own integrations, as a user's run would have.
        report_to=list(report_to) or "none",
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
        # Pinning memory without an accelerator only produces a warning.
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    all_callbacks = list(callbacks)
    if write_status_file:
        all_callbacks.append(StatusFileCallback(output_dir / STATUS_FILE_NAME))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=all_callbacks,
    )
    with _single_torch_thread():
        trainer.train()
    return TrainResult(
        output_dir=output_dir,
        global_step=trainer.state.global_step,
        log_history=list(trainer.state.log_history),
    )
