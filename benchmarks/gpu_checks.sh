#!/usr/bin/env bash
# Every check that needs a GPU, in one command for a short lease: the GPU tests, then
# gpu_rollout.py, gpu_learner.py and gpu_profile.py at the real transformer sizes (PARTS picks
# some of "tests rollout learner profile"). Logs and the RESULTS.md it appended to go to
# $OUT (or /tmp/gpu_checks). Wheels of packages a bare CUDA image lacks (diffusers, torchao,
# pydantic: `pip download --no-deps --only-binary=:all: -d .whl ...`) are installed from .whl/ if
# it exists; extra arguments go to gpu_rollout.py.
#
#     bash benchmarks/gpu_checks.sh [--models sd35l flux1]
#     PARTS="tests learner" bash benchmarks/gpu_checks.sh --no-cudnn-attention
set -o pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchao, diffusers; print('torch', torch.__version__, 'torchao', torchao.__version__,
'diffusers', diffusers.__version__, 'capability', torch.cuda.get_device_capability())" 2>&1 | tee -a "$out/gpu.txt"
parts=" ${PARTS:-tests rollout learner profile} "
# TESTS: node ids to run instead of every test that has a GPU path
tests=${TESTS:-tests/test_gpu_backends.py tests/test_quant_linear.py tests/test_quant_formats.py tests/test_sampling.py}
if [[ $parts == *" tests "* ]]; then
    # shellcheck disable=SC2086
    timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -rs $tests 2>&1 | tee "$out/tests.log"
fi
cd benchmarks || exit 1
if [[ $parts == *" rollout "* ]]; then
    timeout "${BENCH_TIMEOUT:-420}" python3 gpu_rollout.py "$@" 2>&1 | tee "$out/gpu_rollout.log"
fi
# gpu_learner.py takes --no-cudnn-attention and --models of the same arguments
if [[ $parts == *" learner "* ]]; then
    timeout "${LEARNER_TIMEOUT:-300}" python3 gpu_learner.py "$@" 2>&1 | tee "$out/gpu_learner.log"
fi
if [[ $parts == *" profile "* ]]; then
    timeout "${PROFILE_TIMEOUT:-120}" python3 gpu_profile.py --no-cudnn-attention 2>&1 | tee "$out/gpu_profile.log"
fi
cp RESULTS.md "$out/"
