# On the GPU machine, sourced at the start of a device command:
#   source scripts/device_setup.sh && cd /tmp && python3 -m mftrnn ...
# Installs the carried wheels into /tmp/site and unpacks MNIST into /tmp/data (MFTRNN_DATA).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
# PYTHONSAFEPATH: `python3 -m mftrnn` from the repository root imports the installed package (with its
# configs), not the source folder
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 MFTRNN_DATA=/tmp/data PYTHONSAFEPATH=1
mkdir -p /tmp/data/MNIST/raw
for f in .carry/MNIST/raw/*.gz; do gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"; done
