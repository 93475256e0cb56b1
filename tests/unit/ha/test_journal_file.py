"""pysyncobj's FileJournal over ha.journal_file (pwrite) and over its own
mmap file: the same records, the same bytes on disk, and a data directory
written by either is read back by the other."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pysyncobj.journal as pso_journal
import pytest

from ha import raft_node
from ha.journal_file import JournalFile

STOCK = raft_node.STOCK_JOURNAL_FILE
ENTRIES = [(os.urandom(size), index, 1 + index // 3) for index, size in enumerate((10, 200_000, 0, 5000, 70_000), 1)]


@pytest.fixture
def use_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[type], None]]:
    def use(file_class: type) -> None:
        monkeypatch.setattr(pso_journal, "ResizableFile", file_class)

    yield use


def journal(path: Path) -> pso_journal.FileJournal:
    return pso_journal.FileJournal(str(path))


def records(j: pso_journal.FileJournal) -> list[tuple[bytes, int, int]]:
    return [tuple(j[i]) for i in range(len(j))]


def write_history(path: Path) -> list[tuple[bytes, int, int]]:
    """Appends, a truncation from the end (a conflicting suffix) and one
    from the start (log compaction), as Raft does them."""
    j = journal(path)
    for entry in ENTRIES:
        j.add(*entry)
    j.deleteEntriesFrom(3)
    j.add(b"replacement", 4, 9)
    j.deleteEntriesTo(1)
    kept = records(j)
    j._destroy()
    return kept


def used_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    end = int.from_bytes(data[36:40], "little")  # LAST_RECORD_OFFSET
    return data[:end]


def test_records_survive_a_restart(tmp_path: Path, use_file: Callable[[type], None]) -> None:
    use_file(JournalFile)
    kept = write_history(tmp_path / "j")
    assert [index for _, index, _ in kept] == [2, 3, 4]
    assert records(journal(tmp_path / "j")) == kept


def test_the_bytes_on_disk_are_the_stock_journals(tmp_path: Path, use_file: Callable[[type], None]) -> None:
    use_file(STOCK)
    write_history(tmp_path / "stock")
    use_file(JournalFile)
    write_history(tmp_path / "pwrite")
    assert used_bytes(tmp_path / "pwrite") == used_bytes(tmp_path / "stock")


@pytest.mark.parametrize(("writer", "reader"), [(STOCK, JournalFile), (JournalFile, STOCK)])
def test_either_reads_what_the_other_wrote(
    tmp_path: Path, use_file: Callable[[type], None], writer: type, reader: type
) -> None:
    use_file(writer)
    kept = write_history(tmp_path / "j")
    use_file(reader)
    j = journal(tmp_path / "j")
    assert records(j) == kept
    j.add(b"after", 5, 9)  # and goes on appending where the other stopped
    j._destroy()
    use_file(writer)
    assert records(journal(tmp_path / "j")) == [*kept, (b"after", 5, 9)]


def test_a_new_file_is_the_stock_size(tmp_path: Path) -> None:
    JournalFile(str(tmp_path / "a"), defaultContent=b"header")._destroy()
    STOCK(str(tmp_path / "b"), defaultContent=b"header")._destroy()
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
