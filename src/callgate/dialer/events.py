"""``--events FILE.jsonl``: the dialler's record of every try, one JSON line each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    """``--events FILE.jsonl``: one JSON line per try and per skipped contact (appended).

    It reads what the file already holds when opened, so a run that resumes after a crash
    writes the lines the crashed run had no time to write (the ledger has the results),
    and never a line twice.
    """

    def __init__(self, path: str | Path) -> None:
        file = Path(path)
        self.written_tries: set[str] = set()
        self.written_skips: set[int] = set()
        if file.exists():
            for text in file.read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(text)
                except ValueError:  # a line cut short by a crash
                    continue
                if isinstance(line, dict) and line.get("call_id"):
                    self.written_tries.add(str(line["call_id"]))
                elif isinstance(line, dict) and line.get("result") == "skipped":
                    self.written_skips.add(int(line.get("contact", 0)))
        # Open for the dialler's whole run, closed by close(): not a with-block's span.
        self._file: TextIO = file.open("a", encoding="utf-8")
        if self._file.tell() > 0 and not file.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end a line a crash cut short

    def write(self, line: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
