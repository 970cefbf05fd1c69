#!/usr/bin/env bash
# On the GPU machine, in a call that carries .carry_cifar (scripts/device_prepare.sh --cifar-part N):
# add that part of CIFAR-10 to /tmp/data (MFTRNN_DATA of scripts/device_setup.sh); prints what is there.
set -eu
mkdir -p /tmp/data/cifar-10-batches-py
cp .carry_cifar/cifar-10-batches-py/* /tmp/data/cifar-10-batches-py/
ls /tmp/data/cifar-10-batches-py | tr '\n' ' '; echo
n=$(ls /tmp/data/cifar-10-batches-py | grep -c -E '^(data_batch_[1-5]|test_batch|batches.meta)$' || true)
[ "$n" = 7 ] && echo "CIFAR-10 complete under /tmp/data" || echo "CIFAR-10: $n of 7 files so far"
