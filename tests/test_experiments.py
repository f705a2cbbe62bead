"""The experiments of docs/experiments.md, in their --quick modes (generated data, seconds each).

Each command runs end to end as a user runs it; the runs share one scratch folder, so a row
shared by two experiments is trained once (as in the real runs). Also: a killed run resumes to
the same numbers, and the comparison rule of the report.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")
sys.path.insert(0, EXPERIMENTS)

import report  # noqa: E402  (experiments/ is not a package)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experiments"))


def run(script, scratch, *extra):
    process = subprocess.run([sys.executable, os.path.join(EXPERIMENTS, script), "--quick",
                              "--scratch", scratch, *extra], capture_output=True, text=True,
                             timeout=600, cwd=REPO)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-3000:]
    return process.stdout


def results(scratch):
    folder = os.path.join(scratch, "results")
    return {name[:-5]: json.load(open(os.path.join(folder, name)))
            for name in os.listdir(folder) if name.endswith(".json")}


PRETRAINED = ("mnv2-", "dlv3-")   # the name prefixes of part 2's runs


@pytest.mark.parametrize("script, prefix, count", [
    ("table1_labels.py", "labels-", 12),
    ("table1_photos.py", "photos-", 12),
    ("temperature.py", "-fixedT-", 6),
    ("projection.py", "oracle-", 6),
    ("pretrained.py", "mnv2-", 18),
    ("pretrained.py", "dlv3-", 3),
])
def test_each_experiment_runs_end_to_end_and_writes_one_json_per_run(scratch, script, prefix, count):
    run(script, scratch)
    found = {name: r for name, r in results(scratch).items()
             if prefix in name and name.startswith(PRETRAINED) == prefix.startswith(PRETRAINED)}
    assert len(found) == count, sorted(found)
    for name, record in found.items():
        assert record["name"] == name
        assert {"settings", "wall_s", "machine"} <= set(record)
        if record["kind"] != "oracle":
            assert record["seed"] in (0, 1, 2)
            assert len(record["loss"]) >= 2 and all(v == v for v in record["loss"])
            assert 0.0 <= record["metrics"]["miou"] <= 1.0
            if "dupsampling" in name:
                assert len(record["T"]) == len(record["loss"])
        else:
            assert record["rows"], name


def test_a_second_call_trains_nothing_again(scratch):
    out = run("table1_labels.py", scratch)
    assert "..." not in out  # every run already has its result


def test_run_all_writes_the_report_with_every_section(scratch):
    run("run_all.py", scratch)
    text = open(os.path.join(scratch, "report", "experiments.md")).read()
    for heading in ("## 1. Table 1, mIoU*", "## 2. Table 1, mIoU on real photos",
                    "## 3. The adaptive temperature", "## 4. How W is obtained", "## 5. Gallery"):
        assert heading in text
    assert "not run yet" not in text
    figures = os.path.join(scratch, "report", "figures", "experiments")
    assert {"temperature.png", "gallery.png"} <= set(os.listdir(figures))


def test_an_interrupted_label_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    import common
    import labelnet
    import table1_labels

    whole = run("table1_labels.py", str(tmp_path / "whole"), "--only", "labels-dupsampling-os32-seed0")
    assert "mIoU*" in whole
    folders = common.Folders(True, str(tmp_path / "cut"))
    spec = table1_labels.label_run("dupsampling", 32, 0, quick=True, root=common.quick_data(folders))
    original = labelnet.save_checkpoint
    calls = []

    def save_then_stop(path, model, optimizer, iteration, extra=None):  # a kill after iteration 3
        original(path, model, optimizer, iteration, extra)
        calls.append(iteration)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(labelnet, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        common.run_queue([spec], folders, table1_labels.execute)
    assert calls[0] == 3 and not os.path.exists(folders.result_path(spec["name"]))
    common.run_queue([spec], folders, table1_labels.execute)
    cut = json.load(open(folders.result_path(spec["name"])))
    reference = results(str(tmp_path / "whole"))[spec["name"]]
    assert cut["loss"] == reference["loss"]
    assert cut["T"] == reference["T"]
    assert cut["metrics"] == reference["metrics"]
    assert cut["wall_sessions"] == 2


@pytest.mark.parametrize("a, b, expected", [
    ((70.0, 1.0, 3), (67.0, 1.0, 3), "A better by 3.00"),
    ((70.0, 1.0, 3), (68.5, 1.0, 3), "no difference"),
    ((66.0, 0.5, 3), (70.0, 0.5, 3), "B better by 4.00"),
    ((70.0, 0.0, 1), (60.0, 0.0, 1), "too few seeds"),
    (None, (60.0, 0.0, 3), "not run yet"),
])
def test_the_comparison_rule(a, b, expected):
    assert report.verdict(a, b, "A", "B").startswith(expected)


def test_stats_are_mean_and_sample_std_in_percent():
    rows = [{"metrics": {"miou": v}} for v in (0.5, 0.6, 0.7)]
    mean, std, n = report.stats(rows)
    assert (round(mean, 6), round(std, 6), n) == (60.0, 10.0, 3)
