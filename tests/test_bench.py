"""`mftrnn bench` runs end to end (tiny, on the CPU) and writes its JSON report."""
import json

from mftrnn.bench import main


def test_bench_reports_both_loops(tmp_path, data_root):
    out = tmp_path / "bench.json"
    main(["--steps", "4", "--warmup", "2", "--rounds", "1", "--pad", "4", "--hidden", "8", "--batch", "16",
          "--device", "cpu", "--out", str(out), "data.limit=64"])
    res = json.loads(out.read_text())
    assert res["seq_len"] == 32 and len(res["rounds"]) == 1
    r = res["rounds"][0]
    assert r["bare"] > 0 and r["runner"] > 0 and res["ratio"] == r["runner"] / r["bare"]


def test_bench_packed_reports_runs_per_hour_of_each_layout(tmp_path, data_root):
    for layout in ("scan", "blockdiag", "auto"):
        out = tmp_path / f"{layout}.json"
        main(["--steps", "4", "--warmup", "2", "--rounds", "1", "--pad", "4", "--hidden", "8", "--batch", "16",
              "--device", "cpu", "--packed", "1,2", "--mechanism", layout, "--out", str(out), "data.limit=64"])
        res = json.loads(out.read_text())
        assert res["mechanism"] == layout and res["packs"] == [1, 2]  # auto: blockdiag here (the CPU)
        r = res["rounds"][0]
        assert res["runs_per_hour_ratio"]["2"] == 2 * r["2"] / r["alone"]
        # run 0 of a pack is the run alone (seed 0): on the CPU it ends with the same loss
        loss = res["last_train_loss_run0"][0]
        assert abs(loss["1"] - loss["alone"]) < 1e-4 and abs(loss["2"] - loss["alone"]) < 1e-4
