#!/usr/bin/env python3
"""Regenerates src/domain/timezones.tsv from the system's tzdata (Debian: package tzdata).

Each line is an IANA zone or link name and the POSIX TZ string of its current rule, read from
the footer of its TZif file. Run after a tzdata release and review the diff.
"""
import os
import sys

ZI = "/usr/share/zoneinfo"
lines = open(os.path.join(ZI, "tzdata.zi")).read().splitlines()
version = lines[0].split()[-1]
names = set()
for line in lines:
    p = line.split()
    if p and p[0] == "Z":
        names.add(p[1])
    elif p and p[0] == "L":
        names.add(p[2])
out = []
for name in sorted(names):
    path = os.path.join(ZI, name)
    if not os.path.isfile(path):
        continue
    data = open(path, "rb").read()
    if not data.endswith(b"\n"):
        continue
    footer = data[:-1].rsplit(b"\n", 1)[1].decode()
    if footer:
        out.append(f"{name}\t{footer}")
target = os.path.join(os.path.dirname(__file__), "..", "src", "domain", "timezones.tsv")
with open(target, "w") as f:
    f.write(f"# IANA time zone name, TAB, POSIX TZ string of its current rule. Generated from tzdata {version} (the TZif footers);\n")
    f.write("# regenerate with scripts/gen-timezones.py.\n")
    f.write("\n".join(out) + "\n")
print(f"{len(out)} zones from tzdata {version}", file=sys.stderr)
