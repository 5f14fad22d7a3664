"""A Hugging Face ``Trainer``, tuned with the platform through one callback (``tuner.integrations.huggingface``).

Nothing is downloaded: the model is a two-layer BERT built from a ``BertConfig``, and the
task is synthetic but learnable: a sequence of random tokens is positive when token 7
occurs more often than token 11. Evaluation loss (``eval_loss``) is the metric to minimise.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from torch.utils.data import Dataset

from tuner.integrations.huggingface import TunerCallback, resume_path

VOCAB, LENGTH = 32, 24


class Tokens(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.ids = torch.randint(2, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
        self.labels = ((self.ids == 7).sum(1) > (self.ids == 11).sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


def fit(config: dict[str, Any], settings: dict[str, Any]) -> None:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(settings["seed"])
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=config["hidden"],
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * config["hidden"],
            max_position_embeddings=LENGTH,
            num_labels=2,
        )
    )
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=settings["max_steps"],
            per_device_train_batch_size=config["batch_size"],
            learning_rate=config["lr"],
            weight_decay=config["weight_decay"],
            warmup_steps=settings["warmup_steps"],
            eval_strategy="steps",
            eval_steps=settings["eval_every"],
            save_strategy="no",
            save_total_limit=1,
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=settings["seed"],
            data_seed=settings["seed"],
            disable_tqdm=True,
            dataloader_num_workers=0,
            log_level="error",
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Tokens(2048, settings["seed"]),
            eval_dataset=Tokens(256, settings["seed"] + 1),
            callbacks=[TunerCallback()],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train(resume_from_checkpoint=resume_path())
