#!/usr/bin/python3
"""Build step: turn a text file into a C string constant (the appliance's embedded default)."""
import sys

src, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(src, encoding="utf-8").read()
with open(out, "w", encoding="utf-8") as f:
    f.write(f"/* Generated from {src.split('/')[-1]} by tools/embed.py; edit that file instead. */\n")
    f.write(f"const char {name}[] =\n")
    for line in text.splitlines(keepends=True):
        esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        f.write(f'\t"{esc}"\n')
    f.write(";\n")
