"""Judges checkov reports against the skip list: fails (exit 1) on any finding no entry covers,
on any entry that covers nothing in any report (stale), and on a report with no passed check.

usage: checkov_filter.py SKIPS.yaml REPORT.json...
"""
import fnmatch
import json
import sys

import yaml


def main(skips_path, *reports):
    skips = yaml.safe_load(open(skips_path)) or []
    used = set()
    problems = []
    total_passed = total_failed = 0
    for path in reports:
        data = json.load(open(path))
        for r in data if isinstance(data, list) else [data]:
            passed = r.get("summary", {}).get("passed", 0)
            failed = r.get("results", {}).get("failed_checks", [])
            if passed == 0:
                problems.append(f"{path}: checkov passed no check at all; did it run?")
            total_passed += passed
            total_failed += len(failed)
            for f in failed:
                hit = [i for i, s in enumerate(skips)
                       if s["check"] == f["check_id"]
                       and any(fnmatch.fnmatchcase(f["resource"], g) for g in s["resources"])]
                if hit:
                    used.update(hit)
                else:
                    problems.append(f"{path}: {f['check_id']} {f['check_name']}: {f['resource']}")
    for i, s in enumerate(skips):
        if i not in used:
            problems.append(f"stale skip entry {s['check']} {s['resources']}: it matches no finding")
    for p in problems:
        print(p)
    print(f"checkov: {total_passed} passed, {total_failed} failed "
          f"({total_failed - sum(1 for p in problems if ': CKV' in p)} accepted by {skips_path})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
