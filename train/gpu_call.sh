#!/usr/bin/env bash
# The release's damage segmenter trained on a lent GPU machine (docs/training.md, "On a GPU"): one device call,
#   run(command="bash train/gpu_call.sh", carry=[".gpu"], timeout_s=420)
# from the checkout's root, with .gpu/ made here first by `python -m train.gpu_kit`. That machine has PyTorch,
# transformers, OpenCV and NumPy but can fetch nothing: the kit carries the rest as wheels, and the compact photos.
# Its output (under $OUT, fetched back here): segmenter.pt, profile.toml, build_summary.json, results.csv,
# train.log. Here again: train.gpu_kit --returned, train.release_eval, train.release (docs/training.md).
set -euo pipefail
KIT=${KIT:-.gpu}
MINUTES=${GPU_MINUTES:-4.5}  # of training; with start, install and saving the call takes ~6 minutes
IMGSZ=${GPU_IMGSZ:-640}
OUT=${OUT:?the device call sets OUT}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 YOLO_OFFLINE=1  # the font: train.common.offline_env

# Fail in seconds, not after the training: every import the build needs, and the device it will find.
python3 -c "import torch, ultralytics, train.build_profile; print(torch.__version__, torch.cuda.is_available())"

python3 -m train.build_profile --compact "$KIT/compact" --resume models --out /tmp/build --minutes "$MINUTES" \
    --seg_share 1.0 --clf_share 0 --parts_share 0 --skip_classifier --skip_parts --seg_imgsz "$IMGSZ" \
    2>&1 | tee "$OUT/train.log" | grep -v "it/s\]\|s/it\]" || true  # the progress bars stay in the log

cp /tmp/build/segmenter/best.pt "$OUT/segmenter.pt"
cp /tmp/build/profile.toml /tmp/build/build_summary.json "$OUT/"
cp /tmp/build/segmenter/run/results.csv "$OUT/" 2>/dev/null || true
ls -la "$OUT"
