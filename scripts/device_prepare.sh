#!/usr/bin/env bash
# Here (no GPU): gather what a GPU machine without a package registry needs, in ignored folders.
#   .whl/   py3.12 x86-64 wheels of hydra-core, omegaconf, antlr4, wandb and their needs, + mftrnn
#   .carry/ MNIST's four .gz files (unpacked there by scripts/device_setup.sh)
# The third-party wheels are listed in scripts/device_wheels.txt; fetch them once with
#   bash scripts/device_prepare.sh --fetch
# CIFAR-10 (178 MB) is larger than one call carries (64 MiB with the working tree, about 10 MiB of it):
# it travels as one tar split in four parts of about 45 MB, over consecutive calls while the machine
# stays warm (its /tmp survives between them):
#   bash scripts/device_prepare.sh --cifar-part 1    # then a call with carry [".carry_cifar"] running
#   bash scripts/device_cifar.sh                     # on the device: keeps the part; unpacks after the 4th
# and the same for parts 2, 3 and 4.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--cifar-part" ]; then
  part=${2:?part 1, 2, 3 or 4}
  case $part in 1|2|3|4) ;; *) echo "--cifar-part takes 1, 2, 3 or 4" >&2; exit 2;; esac
  src="${MFTRNN_DATA:-../shared/data}"
  rm -rf .carry_cifar && mkdir -p .carry_cifar
  # the same tar every time (sorted names, fixed owner and times), so parts of different calls fit together
  tmp=$(mktemp) && trap 'rm -f "$tmp"' EXIT
  tar cf "$tmp" --sort=name --owner=0 --group=0 --mtime=@0 -C "$src" cifar-10-batches-py
  split -n "$part/4" "$tmp" > ".carry_cifar/cifar.tar.part$part"
  du -sh .carry_cifar; ls .carry_cifar
  exit 0
fi
if [ "${1:-}" = "--fetch" ]; then
  mkdir -p .whl
  while read -r req; do
    [ -z "$req" ] || [ "${req#\#}" != "$req" ] && continue
    if [ "${req#antlr4}" != "$req" ]; then   # antlr4-python3-runtime is an sdist only: build the wheel here
      python3 -m pip wheel -q --no-deps -w .whl "$req"
    else
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$req"
    fi
  done < scripts/device_wheels.txt
fi
rm -f .whl/mftrnn-*.whl
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w .whl . 2>/dev/null
mkdir -p .carry/MNIST/raw
cp "${MFTRNN_DATA:-../shared/data}"/MNIST/raw/*.gz .carry/MNIST/raw/
du -sh .whl .carry
