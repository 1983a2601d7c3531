"""Train an Ultralytics segmenter (YOLO-seg) from any base checkpoint on a YOLO data yaml.

The base is a local ``.pt``/``.yaml``, an Ultralytics name (``yolo11n-seg.pt``, needs internet) or a Hub file
``owner/repo:path/in/repo.pt``. Ultralytics adapts the head to the dataset's classes.

    python -m train.train_segmenter --data /tmp/damage-seg/data.yaml \
        --model ../shared/models/yolo11n-seg-vehicles/yolo11n-seg-vehicles.pt --imgsz 512 --minutes 25 \
        --output_dir models/damage-seg
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train.common import offline_env


@dataclass
class SegmenterArguments:
    data: str = field(metadata={"help": "Ultralytics data yaml (YOLO-seg labels)"})
    model: str = field(
        default="yolo11n-seg.pt", metadata={"help": "base: local .pt/.yaml, Ultralytics name, or owner/repo:file.pt"}
    )
    output_dir: str = field(default="models/segmenter")
    epochs: int = field(default=50)
    minutes: float | None = field(default=None, metadata={"help": "wall-time budget; overrides epochs"})
    imgsz: int = field(default=512)
    batch: int = field(default=8)
    patience: int = field(default=30, metadata={"help": "epochs without val improvement before stopping"})
    workers: int = field(default=2)
    seed: int = field(default=0)
    device: str = field(default="", metadata={"help": "default: the first GPU when there is one, else cpu"})
    close_mosaic: int = field(default=5, metadata={"help": "last epochs without mosaic (closer to real photos)"})
    degrees: float = field(default=5.0)
    scale: float = field(default=0.5)
    fliplr: float = field(default=0.5)
    mixup: float = field(default=0.0)
    cache: bool = field(default=True, metadata={"help": "decode images once into RAM"})
    bf16: str = field(
        default="auto",
        metadata={"help": "CPU training under bf16 autocast: auto (where the CPU has AVX512_BF16 or AMX), yes, no",
                  "choices": ["auto", "yes", "no"]},
    )  # fmt: skip
    plots: bool = field(default=False)
    extra: str | None = field(default=None, metadata={"help": "JSON dict of more Ultralytics train arguments"})
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None, metadata={"help": "owner/name for --push_to_hub"})


def resolve_base(model: str) -> str:
    """A Hub reference ``owner/repo[:file]`` is downloaded (online only); anything else goes to Ultralytics."""
    if Path(model).exists() or "/" not in model or model.startswith((".", "/")):
        return model
    from huggingface_hub import hf_hub_download

    repo, _, filename = model.partition(":")
    return hf_hub_download(repo, filename or "best.pt")


def default_device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def cpu_bf16_wanted(choice: str) -> bool:
    """bf16 autocast pays on CPUs with bf16 arithmetic (1.6x a step for yolo11n-seg at 512 on AMX:
    docs/training.md) and costs where it is emulated."""
    if choice != "auto":
        return choice == "yes"
    from pipeline.accel.precision import cpu_supports

    return cpu_supports("bf16")


def enable_cpu_bf16_autocast() -> None:
    """Ultralytics' trainer accepts ``amp="bf16"`` but its autocast helper allows bf16 on CUDA only: on CPU, use
    torch's own CPU autocast (its GradScaler stays off for bf16)."""
    import torch
    from ultralytics.engine import trainer
    from ultralytics.utils.torch_utils import autocast as cuda_autocast

    def autocast(enabled, device: str = "cuda"):
        if device == "cpu" and enabled is torch.bfloat16:
            return torch.amp.autocast("cpu", dtype=torch.bfloat16)
        return cuda_autocast(enabled, device=device)

    trainer.autocast = autocast


def without_polars(trainer) -> None:
    """Ultralytics reads results.csv back with polars only to store a copy in each checkpoint, and imports it
    outside its own error handling: where polars is missing (a lent GPU machine fetches nothing, and its wheels
    are 55 MB of a 64 MB device call) that copy stays empty instead of the run failing at its first save."""
    trainer.read_results_csv = dict


def train_segmenter(args: SegmenterArguments) -> Path:
    """Train; copy the best weights to ``output_dir/best.pt`` with the run's metrics; return that path."""
    offline_env()
    from ultralytics import YOLO

    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    model = YOLO(resolve_base(args.model))
    options_device = args.device or default_device()
    options = {
        "data": str(Path(args.data).resolve()),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "patience": args.patience,
        "workers": args.workers,
        "seed": args.seed,
        "device": options_device,
        "close_mosaic": args.close_mosaic,
        "degrees": args.degrees,
        "scale": args.scale,
        "fliplr": args.fliplr,
        "mixup": args.mixup,
        "cache": "ram" if args.cache else False,
        "plots": args.plots,
        "project": str(output_dir),
        "name": "run",
        "exist_ok": True,
        "amp": options_device != "cpu",  # mixed precision only where it pays (GPU, or bf16 CPUs below)
        "verbose": False,
    }
    if options_device == "cpu" and cpu_bf16_wanted(args.bf16):
        enable_cpu_bf16_autocast()
        options["amp"] = "bf16"
    if args.minutes:
        options["time"] = args.minutes / 60.0  # Ultralytics fits its schedule to the time budget
    options.update(json.loads(args.extra) if args.extra else {})
    if importlib.util.find_spec("polars") is None:
        model.add_callback("on_pretrain_routine_start", without_polars)
    model.train(**options)
    run_dir = Path(model.trainer.save_dir)
    weights = run_dir / "weights" / ("best.pt" if (run_dir / "weights" / "best.pt").exists() else "last.pt")
    best = output_dir / "best.pt"
    shutil.copyfile(weights, best)
    summary = {
        "base": args.model,
        "args": asdict(args),
        "epochs": model.trainer.epoch + 1,
        "final_metrics": _clean(model.trainer.metrics),
    }
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if args.push_to_hub:
        push_to_hub(output_dir, args.hub_model_id)
    return best


def _clean(metrics: dict | None) -> dict:
    return {k: float(v) for k, v in (metrics or {}).items()}


def push_to_hub(folder: Path, repo_id: str | None) -> None:
    """Upload best.pt, the summary and any model card (README.md) to a Hub model repo."""
    if not repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id owner/name")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=["best.pt", "*.json", "README.md"])


def main(argv: Sequence[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(SegmenterArguments).parse_args_into_dataclasses(args=argv)
    print(train_segmenter(args))


if __name__ == "__main__":
    main()
