"""Loading interactions shows how far it is: bytes of the file checked, rows sent to COPY."""

import io

from jobs.data import load
from jobs.data.load import parse_movielens
from jobs.data.store import CountingReader
from tests.conftest import write_lines

LINE = "1\t10\t4\t100"   # 11 bytes with its line end


def test_the_parser_reports_the_bytes_it_has_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(load, "PROGRESS_EVERY_LINES", 10_000)
    path = write_lines(tmp_path / "u.data", [LINE] * 25_000)   # 275,000 bytes
    read: list[int] = []
    assert sum(1 for _ in parse_movielens(path, read.append)) == 25_000
    first, second, last = read
    # the file is read ahead of the lines parsed by at most one 8 KiB chunk
    assert 110_000 <= first < 110_000 + 8_192
    assert 220_000 <= second < 220_000 + 8_192
    assert last == 275_000


def test_copy_is_told_each_row_it_was_handed() -> None:
    rows = "1,10,4.0,t\n" * 5                 # 11 characters a row
    told: list[int] = []
    reader = CountingReader(io.StringIO(rows), told.append)
    assert "".join(iter(lambda: reader.read(25), "")) == rows
    assert told == [2, 4, 5, 5]               # after 25, 50, 55 characters, then the end
    assert reader.lines == 5
