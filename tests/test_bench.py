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
