#!/usr/bin/env bash
# On the GPU machine, in a call that carries .carry_cifar (scripts/device_prepare.sh --cifar-part N):
# keep that part of CIFAR-10's tar in /tmp/cifar_parts; once all four are there, unpack them into
# /tmp/data (MFTRNN_DATA of scripts/device_setup.sh). Prints what is there.
set -eu
mkdir -p /tmp/cifar_parts /tmp/data
cp .carry_cifar/cifar.tar.part* /tmp/cifar_parts/
n=$(ls /tmp/cifar_parts | grep -c '^cifar.tar.part[1-4]$' || true)
if [ "$n" = 4 ]; then
  cat /tmp/cifar_parts/cifar.tar.part1 /tmp/cifar_parts/cifar.tar.part2 /tmp/cifar_parts/cifar.tar.part3 \
    /tmp/cifar_parts/cifar.tar.part4 | tar xf - -C /tmp/data
  ls /tmp/data/cifar-10-batches-py | tr '\n' ' '; echo
  echo "CIFAR-10 complete under /tmp/data"
else
  echo "CIFAR-10: $n of 4 parts so far"
fi
