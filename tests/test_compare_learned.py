"""compare-learned's report: verdicts of each learned method against random and nearest."""

from eval.compare_learned import SHOWN, format_markdown


def _m(mean, half):
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half, "n": 4}


def test_report_states_each_verdict_from_the_intervals():
    row = {k: _m(1.0, 0.1) for k in SHOWN}
    table = {"drl_fgso": {**row, "mean_cost": _m(0.09, 0.001)},
             "gat_mec": None,
             "tsg_marl": {**row, "mean_cost": _m(0.20, 0.05)},
             "random": {**row, "mean_cost": _m(0.25, 0.02)},
             "nearest": {**row, "mean_cost": _m(0.21, 0.01)}}
    md = format_markdown({"instances": 4, "slots": 2, "seed": 7, "sizes": [6],
                          "table": {"6": table}})
    assert "drl_fgso: beats random, beats nearest" in md
    assert "tsg_marl: does not clearly beat random, does not clearly beat nearest" in md
    assert "| gat_mec | not available" in md and "gat_mec:" not in md
