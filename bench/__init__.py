"""punktfunk benchmarks: ratios against named peers, measured side by side in one run.

Run ``python -m bench`` (full, for people) or ``python -m bench --quick`` (CI,
under two minutes). ``--only NAME`` runs one comparison, ``--out PATH`` picks
the Markdown file (PNG plots are written next to it). Nothing is installed by
the harness: missing peers are reported with the command that installs them
and the comparison that needs them is skipped with that reason.

Where CPU seconds drift more than the effect being measured (pipeline vs
GStreamer, armed vs off), the full run also counts instructions per frame
with valgrind's callgrind (``bench/instructions.py``): the same input gives
the same count whatever else the machine is doing.

Each comparison is a module ``bench.<module>`` with ``run(quick: bool) -> dict``
and is run in its own child process (a hang or crash costs only that section).

The dict a comparison returns (all keys optional)::

    {
      "title":  "FEC encode throughput",
      "what":   "one paragraph: what is compared with what, and how",
      "commands": ["exact command lines of the peers, if any"],
      "tables": [{"title": "...", "headers": ["case", "MB/s"], "rows": [["k=212", 2600.0]]}],
      "ratios": [{"name": "compiled / numpy", "value": 31.2,
                  "target": ">= 1.0", "ok": True}],          # ok None = no target
      "plot":   {"kind": "bar", "title": "...", "ylabel": "MB/s",
                 "labels": ["k=212 m=43", ...],               # groups on the x axis
                 "series": {"compiled": [..], "numpy": [..]}, # one bar per series
                 "log": False, "target": None},
      "notes":  ["free text lines"],
      "not_run": "reason",   # the comparison could not run: nothing else is shown
      "raw":    {...}        # anything JSON-able, kept in the JSON next to the report
    }

A module that returns a plain dict of numbers (or nested dicts / lists of
dicts) is rendered too: scalars become a metric/value table, a list of dicts a
table with one column per key, and keys containing ``ratio`` are listed as
ratios. Missing numbers are never filled in: an absent value prints as "–".
"""
