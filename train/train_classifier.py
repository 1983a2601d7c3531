"""Fine-tune any ``AutoModelForImageClassification`` base as the car check or the damage check.

Image folders in, a transformers model folder out (labels in ``config.id2label``, image processor beside it)::

    python -m train.train_classifier --train_dir data/damage/train --validation_dir data/damage/val \
        --labels whole damaged --model_name_or_path ../shared/models/imagenet-efficientnet-lite0 \
        --output_dir models/damage-classifier --learning_rate 5e-4 --num_train_epochs 5

Label order matters to the pipeline: damage ``whole damaged`` (ids 0, 1), car ``not_car car``.
Without ``--validation_dir`` a near-duplicate-aware split of the training folder is held out. The dataset and its
augmentation: ``train.classifier_data``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from train.classifier_data import ImageFolderDataset, Target, eval_transform, folder_items, train_transform
from train.common import offline_env

DEFAULT_BASE = "google/vit-base-patch16-224-in21k"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default=DEFAULT_BASE, metadata={"help": "Hub id or local folder"})
    freeze_fraction: float = field(
        default=0.0, metadata={"help": "freeze this fraction of the backbone's parameter tensors, input side first"}
    )


@dataclass
class DataArguments:
    train_dir: str = field(metadata={"help": "image folder: <train_dir>/<label>/**/*.jpg"})
    validation_dir: str | None = field(default=None, metadata={"help": "same layout; default: split of train_dir"})
    labels: list[str] | None = field(default=None, metadata={"help": "label names in id order (default: sorted)"})
    folder_map: str | None = field(
        default=None,
        metadata={
            "help": "JSON: folder -> label, list of labels (the photo is one of them, which one is unknown: "
            'e.g. {"damaged": ["minor", "moderate", "severe"]}) or null (folder ignored); other folders must be labels'
        },
    )
    val_fraction: float = field(default=0.15)
    augment: str = field(default="strong", metadata={"choices": ["strong", "light", "none"]})
    min_crop_scale: float = field(default=0.25, metadata={"help": "RandomResizedCrop: smallest area kept"})
    class_balance: bool = field(default=True, metadata={"help": "weight the loss by inverse class frequency"})
    early_stopping_patience: int = field(default=3, metadata={"help": "evaluations without improvement; 0 = off"})
    max_minutes: float | None = field(default=None, metadata={"help": "stop (evaluate, keep the best) after this"})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)


# --- metrics, loss, callbacks --------------------------------------------------------------------


def make_compute_metrics(labels: Sequence[str]) -> Callable:
    """Validation metrics from multi-hot targets; ``selection_score`` picks the checkpoint (see target_metrics)."""
    from train.evaluate.metrics import target_metrics

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, targets = eval_pred
        probabilities = torch.tensor(np.asarray(logits)).float().softmax(-1).numpy()
        metrics = target_metrics(np.asarray(targets), probabilities, labels)
        return {k: v for k, v in metrics.items() if isinstance(v, float)}

    return compute_metrics


def class_weights(targets: Sequence[Target | int], num_labels: int) -> torch.Tensor:
    """Inverse frequency of the photos with one known label, normalised to mean 1 (absent classes get 0).

    Photos known only as "one of these labels" weigh the mean of those labels' weights (in the loss)."""
    targets = [(t,) if isinstance(t, int) else t for t in targets]
    known = [t[0] for t in targets if len(t) == 1]
    counts = np.bincount(np.asarray(known, dtype=int), minlength=num_labels).astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def set_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """-log P(label in the photo's set): cross-entropy for one known label; for "one of these labels", the
    probability of the set (e.g. P(damaged) = P(minor) + P(moderate) + P(severe) for a photo of unknown grade)."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    log_in_set = torch.logsumexp(log_p.masked_fill(targets <= 0, float("-inf")), dim=-1)
    row_weights = torch.ones(len(targets), device=logits.device)
    if weights is not None:
        row_weights = (targets * weights.to(logits.device)).sum(-1) / targets.sum(-1).clamp(min=1)
    return -(row_weights * log_in_set).sum() / row_weights.sum().clamp(min=1e-8)


def make_trainer_class():
    from transformers import Trainer

    class WeightedLossTrainer(Trainer):
        """Class-weighted set loss (``set_loss``), so the rarer class is not sacrificed."""

        def __init__(self, *args, loss_weights: torch.Tensor | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.loss_weights = loss_weights

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = inputs.pop("labels")
            outputs = model(**inputs)
            loss = set_loss(outputs.logits, targets, self.loss_weights)
            return (loss, outputs) if return_outputs else loss

    return WeightedLossTrainer


def time_budget_callback(minutes: float):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Stop after ``minutes``: evaluate and save once more so the best checkpoint can be restored."""

        def __init__(self) -> None:
            self.deadline = math.inf

        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.monotonic() + minutes * 60

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() > self.deadline:
                control.should_training_stop = True
                control.should_evaluate = args.eval_strategy != "no"
                control.should_save = True
            return control

    return TimeBudget()


def freeze_backbone(model: torch.nn.Module, fraction: float) -> int:
    """Freeze the first ``fraction`` of the parameter tensors (never the new head); returns how many.

    Early layers are generic and the costliest to back-propagate through on CPU.
    """
    names = [n for n, _ in model.named_parameters() if not _is_head(n)]
    frozen = set(names[: int(len(names) * fraction)])
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name not in frozen
    return len(frozen)


def _is_head(name: str) -> bool:
    return any(part in name for part in ("classifier", "head.fc", "fc.", ".head."))


# --- main ----------------------------------------------------------------------------------------


def train_classifier(model_args: ModelArguments, data_args: DataArguments, training_args) -> Path:
    """Fine-tune and save to ``training_args.output_dir``; returns that folder."""
    offline_env()
    from transformers import AutoImageProcessor, AutoModelForImageClassification, EarlyStoppingCallback

    from train.prepare import near_duplicate_groups, split_by_groups

    train_root = Path(data_args.train_dir)
    labels = data_args.labels or sorted(p.name for p in train_root.iterdir() if p.is_dir())
    folder_map = json.loads(data_args.folder_map) if data_args.folder_map else None
    train_items = folder_items(train_root, labels, folder_map)
    if data_args.validation_dir:
        eval_items = folder_items(Path(data_args.validation_dir), labels, folder_map)
    else:
        groups = near_duplicate_groups([p for p, _ in train_items])
        train_idx, val_idx = split_by_groups(train_items, groups, data_args.val_fraction, training_args.seed)
        train_items, eval_items = [train_items[i] for i in train_idx], [train_items[i] for i in val_idx]
    rng = random.Random(training_args.seed)
    if data_args.max_train_samples:
        train_items = rng.sample(train_items, min(data_args.max_train_samples, len(train_items)))
    if data_args.max_eval_samples:
        eval_items = rng.sample(eval_items, min(data_args.max_eval_samples, len(eval_items)))

    processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path,
        dtype=torch.float32,  # trains in float32 whatever the file stores (the release ships fp16 weights)
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,  # a new head for our labels
    )
    if hasattr(model.config, "label_names"):  # timm-wrapper configs save these, not id2label: keep ours
        model.config.label_names = list(labels)
    if model_args.freeze_fraction > 0:
        freeze_backbone(model, model_args.freeze_fraction)

    transform = train_transform(processor, data_args.augment, data_args.min_crop_scale)
    train_set = ImageFolderDataset(train_items, transform, len(labels))
    eval_set = ImageFolderDataset(eval_items, eval_transform(processor), len(labels))
    callbacks = []
    if data_args.early_stopping_patience and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience))
    if data_args.max_minutes:
        callbacks.append(time_budget_callback(data_args.max_minutes))
    weights = class_weights([y for _, y in train_items], len(labels)) if data_args.class_balance else None
    trainer = make_trainer_class()(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set if len(eval_set) else None,
        compute_metrics=make_compute_metrics(labels),
        callbacks=callbacks,
        loss_weights=weights,
    )
    result = trainer.train()
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    processor.save_pretrained(str(output_dir))
    summary = {
        "base": model_args.model_name_or_path,
        "labels": labels,
        "train_images": len(train_items),
        "eval_images": len(eval_items),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "best_metric": trainer.state.best_metric,
        "epochs": trainer.state.epoch,
        "eval": trainer.evaluate() if len(eval_set) else {},
    }
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    if training_args.push_to_hub:
        trainer.push_to_hub()
        processor.push_to_hub(training_args.hub_model_id or output_dir.name)
    return output_dir


def default_training_arguments(**overrides):
    """TrainingArguments suited to small CPU fine-tunes; any field can be overridden."""
    from transformers import TrainingArguments

    values = {
        "output_dir": "models/classifier",
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": "selection_score",
        "greater_is_better": True,
        "save_total_limit": 2,
        "remove_unused_columns": False,  # our dataset yields pixel_values + labels only
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "learning_rate": 5e-5,
        "num_train_epochs": 5,
        "warmup_steps": 0.05,
        "weight_decay": 0.01,
        "logging_steps": 10,
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 1,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    values.update(overrides)
    return TrainingArguments(**values)


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    # Our defaults, not TrainingArguments' (which save nothing useful for early stopping).
    defaults = default_training_arguments()
    parser.set_defaults(
        **{
            k: getattr(defaults, k)
            for k in (
                "eval_strategy",
                "save_strategy",
                "load_best_model_at_end",
                "metric_for_best_model",
                "save_total_limit",
                "remove_unused_columns",
                "per_device_train_batch_size",
                "per_device_eval_batch_size",
                "dataloader_pin_memory",
                "learning_rate",
                "report_to",
                "logging_steps",
            )
        }
    )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    print(train_classifier(model_args, data_args, training_args))


if __name__ == "__main__":
    main()
