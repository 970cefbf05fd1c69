"""The `mftrnn` command: `mftrnn <subcommand> [options]`.

Hydra owns argv, so the subcommand is removed before the Hydra app (whose module sets the job
name and the config) parses its overrides.
"""
from __future__ import annotations

import sys

USAGE = """usage: mftrnn <command> [overrides]

commands:
  train    train an LSTM/GRU on a long-sequence task (Hydra app: key=value overrides, -m for sweeps)
  theory   the mean-field theory: fixed points, time scales, Jacobian spectra, grids (Hydra app)
  critical solve the critical initialization for a cell and a task (Hydra app), write critical.json
  diagnose measure an initialized (or trained) network's Jacobians and memory beside the theory
  report   every figure and table of sweeps, rebuilt from their run dirs (`mftrnn report --help`)
  bench    steps/s of the runner against a bare cuDNN training loop (see `mftrnn bench --help`);
           `mftrnn bench theory`: the theory's speed on this machine (CPU)

examples:
  mftrnn train task=padded_mnist task.pad=1000 cell=gru init=chrono
  mftrnn train -m task.pad=100,1000 init=standard,chrono seed=0,1,2
  mftrnn train --cfg job          # print the composed config
  mftrnn train --help             # config groups and their options
  mftrnn theory cell=gru init.gates.z.mu=4 theory.simulate=true
  mftrnn critical cell=lstm task=padded_mnist task.pad=1000
  mftrnn diagnose cell=lstm init=critical task.pad=1000 device=cpu
  mftrnn report outputs/sweeps/adhoc
"""


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    if sys.argv[1] == "--version":
        from mftrnn import __version__

        print(f"mftrnn {__version__}")
        return
    command = sys.argv.pop(1)
    sys.argv[0] = f"mftrnn {command}"
    if command == "train":
        from mftrnn.train import main as run
    elif command == "theory":
        from mftrnn.theory.app import main as run
    elif command == "critical":
        from mftrnn.critical_app import main as run
    elif command == "diagnose":
        from mftrnn.diagnose_app import main as run
    elif command == "report":
        from mftrnn.report_app import main as report_main

        report_main(sys.argv[1:])
        return
    elif command == "bench" and sys.argv[1:2] == ["theory"]:
        from mftrnn.theory.bench import main as bench_theory

        bench_theory(sys.argv[2:])
        return
    elif command == "bench":
        from mftrnn.bench import main as run
    else:
        print(f"mftrnn: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from mftrnn.errors import use_one_line_config_errors

    use_one_line_config_errors(command)
    try:
        run()
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which checkpoints and stops by itself)
        print(f"mftrnn {command}: stopped: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
