#!/usr/bin/env python3
"""Verifies an export_audit_log file offline: python3 verify_audit.py audit.jsonl [head_seq]"""
import hashlib, json, sys

prev, expected, checked = "0" * 64, 1, 0
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.strip():
        continue
    entry = json.loads(line)
    stored_hash, stored_prev = entry.pop("hash"), entry.pop("prev_hash")
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    checked += 1
    if entry["seq"] != expected:
        sys.exit(print(json.dumps({"ok": False, "entries_checked": checked, "first_bad": {"seq": expected, "reason": "missing"}})) or 1)
    if stored_prev != prev or hashlib.sha256((prev + canonical).encode()).hexdigest() != stored_hash:
        sys.exit(print(json.dumps({"ok": False, "entries_checked": checked, "first_bad": {"seq": entry["seq"], "id": entry["id"]}})) or 1)
    prev, expected = stored_hash, expected + 1
if len(sys.argv) > 2 and int(sys.argv[2]) >= expected:
    sys.exit(print(json.dumps({"ok": False, "entries_checked": checked, "first_bad": {"seq": expected, "reason": "missing"}})) or 1)
print(json.dumps({"ok": True, "entries_checked": checked, "first_bad": None}))
