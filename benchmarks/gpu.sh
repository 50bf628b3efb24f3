#!/usr/bin/env bash
# The one prepared GPU check (issue 5): golden cases on CUDA, the 1.3B-shaped full conversion,
# and a few 14B-shaped layers. Needs torch with CUDA, safetensors, scipy, numpy, tqdm.
# usage: benchmarks/gpu.sh GOLDEN_DIR OUT_DIR
set -uo pipefail
golden=${1:?golden dir}; out=${2:?out dir}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 "$golden/../tools/check_golden.py" "$golden"/* --casa "python3 -m casa_core" --extra "--device cuda"
python3 "$golden/../tools/check_golden.py" "$golden"/* --casa "python3 -m casa_core" --extra "--device cuda" \
    --precision float32
python3 benchmarks/run.py --device cuda --workdir /tmp/cb --sample 1 --markdown "$out/performance-gpu.md"
python3 benchmarks/run.py --device cuda --size 14b --blocks 1 --workdir /tmp/cb --sample 1 \
    --markdown "$out/performance-gpu.md"
