#!/usr/bin/env bash
# The GPU measurements of issue #12 in one command (at most ~9 minutes on an H200), prepared on the CPU machine.
#
#   bash benchmarks/gpu_all.sh prepare     here, once: wheels the GPU image lacks (.whl/) and a preprocessed data set
#                                          for gpu_check.py (.gpu_data/), both ignored by git and carried
#   bash benchmarks/gpu_all.sh             on the GPU machine (device tool: carry [".whl", ".gpu_data"]):
#                                          installs the wheels, then step_cost.py on cuda for SegFormer-B2 (LoRA,
#                                          whole) and EfficientNet-Lite0 (LoRA) on the Hippocampus-size and LA-size
#                                          plans presets, each with and without the cost levers in the same process
#                                          (--ab), then benchmarks/gpu_check.py; everything lands under $OUT
#   GPU_ALL_DEVICE=cpu GPU_ALL_TINY=1 GPU_ALL_STUB_SITK=1 OUT=/tmp/gpu_all_out bash benchmarks/gpu_all.sh
#                                          the same commands on CPU with tiny step counts and the SimpleITK stub
#                                          (gpu_check.py, which is CUDA-only, is skipped): checks the script before
#                                          device time is spent
#
# What comes back ($OUT; at most 8 files): gpu_all.log, cost_gpu.md (step_cost.py --render of every run),
# gpu_all_json.tar.gz (every JSON: step_cost runs as cost_h200_*.json, gpu_check_h200.json), and gpu_check.json.
# The runs go in order of importance and each is skipped when the time left (GPU_ALL_BUDGET_S, default 510 s from
# the start) is too short for it, so that whatever finished comes back inside the device tool's 10-minute limit.
#
# The GPU image has torch, torchvision, timm, transformers and peft but not nnU-Net and its helpers, and cannot
# reach a package registry; the wheels travel (about 13 MB). SimpleITK (a 52 MB wheel; nnU-Net imports it when its
# image readers are imported, and nothing here reads or writes an image) is replaced there by a stub module that
# fails on use, and the EfficientNet-Lite0 U-Net gets random weights (nnUNet_MN_2d_weights=random: the same
# network and cost, without the 18 MB weights package). SegFormer-B2 is built from its config (random weights) as
# always in step_cost.py.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
WHEELS=.whl
DATA=.gpu_data
GPU_DATASET=${GPU_DATASET:-Dataset508_Hippocampus_8lab}
# nnU-Net and its helpers, as installed by `pip install .` with nnunetv2 2.8.1 (python 3.12 wheels for the image)
PINS=(nnunetv2==2.8.1 acvl-utils==0.2.6 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6
      dynamic-network-architectures==0.4.4 blosc2==4.15.0 ndindex==1.10.1 connected-components-3d==4.1.1
      nibabel==5.4.2 timm==1.0.22)  # timm: dynamic-network-architectures 0.4.4 needs timm<1.0.23

prepare() {
    for d in "/$WHEELS/" "/$DATA/"; do
        grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
    done
    mkdir -p "$WHEELS" "$DATA/nnUNet_preprocessed"
    local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
                     --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    for pin in "${PINS[@]}"; do
        # a binary wheel for the image's python 3.12; packages published as source only are built into a
        # (pure-python) wheel here
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d "$WHEELS" "$pin" \
            || python3 -m pip wheel -q --no-deps -w "$WHEELS" "$pin" || { echo "no wheel for $pin" >&2; exit 1; }
    done
    if [ -d "${nnUNet_preprocessed:-/nonexistent}/$GPU_DATASET" ]; then
        rm -rf "${DATA:?}/nnUNet_preprocessed/$GPU_DATASET"
        cp -r "$nnUNet_preprocessed/$GPU_DATASET" "$DATA/nnUNet_preprocessed/"
    else  # a small synthetic semi-supervised data set, planned and preprocessed with the stock console scripts
        local work
        work=$(mktemp -d)
        export nnUNet_raw=$work/raw nnUNet_preprocessed=$work/pre nnUNet_results=$work/res nnUNet_n_proc_DA=2
        mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
        nnUNetv2_mn_synthetic -d 508 --name GpuCheck --num_labeled 8 --num_unlabeled 16 --num_test 2 \
            --shape 40 48 40 || exit 1
        nnUNetv2_plan_and_preprocess -d 508 -c 3d_fullres -npfp 2 -np 2 || exit 1
        nnUNetv2_mn_preprocess_unlabeled -d 508 -c 3d_fullres -np 2 || exit 1
        GPU_DATASET=Dataset508_GpuCheck
        cp -r "$nnUNet_preprocessed/$GPU_DATASET" "$DATA/nnUNet_preprocessed/"
        rm -rf "$work"
    fi
    echo "$GPU_DATASET" > "$DATA/dataset_name"
    du -sh "$WHEELS" "$DATA"
    echo "carry: [\"$WHEELS\", \"$DATA\"]; the working tree and both must stay under 64 MiB together"
}

run() {
    local start budget device tiny out res
    start=$(date +%s)
    budget=${GPU_ALL_BUDGET_S:-510}
    device=${GPU_ALL_DEVICE:-cuda}
    tiny=${GPU_ALL_TINY:-0}
    out=${OUT:-/tmp/gpu_all_out}
    res=$(mktemp -d)
    mkdir -p "$out"
    exec > >(tee -a "$out/gpu_all.log") 2>&1
    echo "gpu_all.sh on $(hostname), device $device, tiny=$tiny, budget ${budget}s, $(date -Is)"
    [ "$device" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

    local py=python3
    if compgen -G "$WHEELS/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$WHEELS"/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    elif [ -x .venv/bin/python ]; then
        py=.venv/bin/python  # the CPU dry run: the development environment
    fi
    if [ "${GPU_ALL_STUB_SITK:-0}" = 1 ] || ! $py -c "import SimpleITK" 2> /dev/null; then
        mkdir -p /tmp/site_stub/SimpleITK
        cat > /tmp/site_stub/SimpleITK/__init__.py << 'EOF'
"""Stub: nnU-Net imports SimpleITK with its image readers; these benchmarks never read or write an image."""


def __getattr__(name):
    raise ImportError(f"SimpleITK.{name}: SimpleITK is not installed on this machine (gpu_all.sh stub)")
EOF
        export PYTHONPATH=/tmp/site_stub${PYTHONPATH:+:$PYTHONPATH}
    fi
    # the package as setup.py lays it out (trainers/ and plans/ are nnunetv2_mn.trainers and nnunetv2_mn.plans)
    rm -rf /tmp/site_pkg && mkdir -p /tmp/site_pkg
    cp -r nnunetv2_mn /tmp/site_pkg/ && cp -r trainers /tmp/site_pkg/nnunetv2_mn/trainers \
        && cp -r plans /tmp/site_pkg/nnunetv2_mn/plans || exit 1
    export PYTHONPATH=/tmp/site_pkg:$PYTHONPATH
    export nnUNet_results=/tmp/gpu_all_results nnUNet_MN_2d_weights=random HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    export NNUNETV2_MN_NO_HOOK=1 PYTHONUNBUFFERED=1
    unset nnUNet_raw
    mkdir -p "$nnUNet_results"
    $py -c "import torch, nnunetv2, peft, transformers, nnunetv2_mn.trainers.mn; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'peft', peft.__version__, 'transformers', transformers.__version__)" || exit 1
    echo "set-up done after $(( $(date +%s) - start )) s"

    pack() {  # after every run, so that a timeout still returns what finished
        tar -czf "$out/gpu_all_json.tar.gz" -C "$res" . 2> /dev/null
        compgen -G "$res/cost_*.json" > /dev/null && $py benchmarks/step_cost.py --render "$res"/cost_*.json \
            > "$out/cost_gpu.md" 2> /dev/null
        return 0
    }
    # step NAME MIN_SECONDS ARGS...: one step_cost.py run, if MIN_SECONDS are left
    step() {
        local name=$1 need=$2 left
        shift 2
        left=$(( budget - ($(date +%s) - start) ))
        if [ "$left" -lt "$need" ]; then echo "skip $name: ${left}s left, needs ~${need}s"; return; fi
        echo "== $name ($(date +%T), ${left}s left): $*"
        timeout "$left" $py benchmarks/step_cost.py --device "$device" --out "$res/cost_h200_$name.json" "$@" \
            > "$res/$name.stdout" 2>&1
        echo "   rc=$? after $(( $(date +%s) - start )) s"; tail -3 "$res/$name.stdout"
        pack
    }
    local hip=(--steps 10 --warmup 3) la=(--steps 5 --warmup 2) nopred=(--kinds nnunet stage1 3d_student 2d_teacher 2d_student)
    if [ "$tiny" = 1 ]; then
        hip=(--steps 1 --warmup 0); la=(--steps 1 --warmup 0 --kinds 2d_teacher); nopred=(--kinds 2d_teacher)
    fi
    # the levers kept on CPU (docs/benchmarks/cost.md), each run also without them in the same process (--ab)
    local lora_levers=(--ab --teacher-merge-lora --channels-last)
    local whole_levers=(--ab --channels-last)
    step hip_segformer_lora 60 --plans hippocampus --model segformer-b2 --finetune lora "${hip[@]}" "${lora_levers[@]}"
    step la_segformer_lora 90 --plans la --model segformer-b2 --finetune lora "${la[@]}" "${nopred[@]}" "${lora_levers[@]}"
    step hip_effnet_lora 60 --plans hippocampus --model effnet_lite0 --finetune lora "${hip[@]}" "${nopred[@]}" \
        "${lora_levers[@]}"
    step hip_segformer_whole 60 --plans hippocampus --model segformer-b2 --finetune whole "${hip[@]}" "${nopred[@]}" \
        "${whole_levers[@]}"
    if [ "$device" = cuda ] && [ -f "$DATA/dataset_name" ]; then
        local left
        left=$(( budget - ($(date +%s) - start) ))
        if [ "$left" -ge 200 ]; then
            echo "== gpu_check ($(date +%T), ${left}s left)"
            nnUNet_preprocessed=$REPO/$DATA/nnUNet_preprocessed timeout "$left" $py benchmarks/gpu_check.py \
                -d "$(cat "$DATA/dataset_name")" --out "$res/gpu_check_h200.json" > "$res/gpu_check.stdout" 2>&1
            echo "   rc=$? after $(( $(date +%s) - start )) s"; tail -3 "$res/gpu_check.stdout"
            [ -f "$res/gpu_check_h200.json" ] && cp "$res/gpu_check_h200.json" "$out/gpu_check.json"
            pack
        else
            echo "skip gpu_check: ${left}s left, needs ~200s"
        fi
    fi
    # torch.inference_mode for the teacher, which gave nothing on CPU, alone
    step hip_segformer_lora_inference 60 --plans hippocampus --model segformer-b2 --finetune lora "${hip[@]}" \
        --kinds nnunet 3d_student 2d_teacher --ab --teacher-inference-mode
    step la_effnet_lora 60 --plans la --model effnet_lite0 --finetune lora "${la[@]}" "${nopred[@]}" "${lora_levers[@]}"
    step la_segformer_whole 90 --plans la --model segformer-b2 --finetune whole "${la[@]}" "${nopred[@]}" \
        "${whole_levers[@]}"
    pack
    echo "done after $(( $(date +%s) - start )) s; files in $out: $(ls "$out" | tr '\n' ' ')"
}

case "${1:-run}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_all.sh [prepare|run]" >&2; exit 2 ;;
esac
