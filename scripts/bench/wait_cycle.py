"""Figures of one wait-cycle run, from its evidence bundle (report.json, timeline.jsonl,
waitfor-boot-1.json), in seconds from the pair's start:

- cycle_formed_s: when the cycle formed. By the guest's own clock (the running gated
  job's start) when every job on the cycle was queued before it (job ids tell), which
  formed_from_guest_clock says; otherwise the harness's first sighting, an upper bound.
- named_after_forming_s: until the harness confirmed it (persist, 10 s by default).
- decided_after_forming_s: until the last expectation of the pair was decided.
- verdict_after_forming_s: until the verdict was written, evidence collected and the
  VM torn down.
- pair_wall_s: the whole pair, QEMU start included."""

import json
import sys
from pathlib import Path


def secs(d):
    return None if d is None else d["secs"] + d["nanos"] / 1e9


def main(bundle: Path) -> int:
    report = json.loads((bundle / "report.json").read_text())
    for pair in report["pairs"]:
        run = bundle / pair["run_dir"]
        cycle = next((o for o in pair["outcomes"] if o["id"].startswith("wait_cycle")), None)
        timeline = [json.loads(l) for l in (run / "timeline.jsonl").read_text().splitlines() if l]
        verdict_at = next((e["t_secs"] for e in timeline if e["event"] == "verdict"), None)
        ssh_at = next((e["t_secs"] for e in timeline if e["event"] == "ssh up"), None)
        waitfor = json.loads((run / "waitfor-boot-1.json").read_text())
        confirmed = waitfor.get("confirmed") or {}
        formed = secs(cycle and cycle.get("changed_at"))
        named = secs(cycle and cycle.get("decided_at"))
        last_decision = max((secs(o.get("decided_at")) or 0 for o in pair["outcomes"]), default=None)
        row = {
            "pair": pair["id"],
            "verdict": pair["verdict_word"],
            "as_planned": pair["matches_plan"],
            "cycle_formed_s": formed,
            "formed_from_guest_clock": confirmed.get("formed_from_guest"),
            "ssh_up_s": ssh_at,
            "named_after_forming_s": None if formed is None or named is None else named - formed,
            "decided_after_forming_s": None if formed is None or not last_decision else last_decision - formed,
            "verdict_after_forming_s": None if formed is None or verdict_at is None else verdict_at - formed,
            "verdict_after_naming_s": None if named is None or verdict_at is None else verdict_at - named,
            "pair_wall_s": pair["duration_secs"],
            "reads": waitfor.get("reads"),
        }
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
