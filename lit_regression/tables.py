"""Reading tables with pyarrow, the one place where files are opened.

* :func:`read_table`: a whole CSV, TSV (any delimiter) or Parquet file, chosen by the file's extension.
* :class:`ParquetFiles`: a Parquet file, a folder of them or a glob, checked to share one schema, seen as one
  table whose rows are numbered across the files in sorted order (the *global row index*) and cut into
  :class:`Piece` s, one per row group, read a row group at a time.

Every failure is an :class:`InputError` that names the argument, the file and what was expected.
"""

from __future__ import annotations

import codecs
import csv
import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lit_regression.errors import InputError, say

PARQUET = (".parquet", ".pq")
DELIMITERS = {".tsv": "\t", ".tab": "\t"}  # everything else that is not Parquet: comma, unless --data.sep says
OTHER_DELIMITERS = (";", "\t", "|", ",")


def listing(names) -> str:
    return ", ".join(repr(str(n)) for n in names)


def is_parquet(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in PARQUET


def delimiter(path: str, sep: str | None) -> str:
    """The delimiter of a text table: ``sep`` if given, else by extension (tab for ``.tsv``, comma otherwise)."""
    return sep if sep is not None else DELIMITERS.get(os.path.splitext(path)[1].lower(), ",")


def _shown(sep: str) -> str:
    return {"\t": "'\\t' (tab)", " ": "' ' (space)"}.get(sep, repr(sep))


def _sep_hint(path: str, sep: str) -> str | None:
    """``'; add --data.sep ";"'`` when the header line holds another delimiter but not ``sep``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
    except OSError:
        return None
    if sep in header:
        return None
    for other in OTHER_DELIMITERS:
        if other != sep and other in header:
            flag = "'\\t'" if other == "\t" else repr(other)
            return f"the header line holds {_shown(other)}: add --data.sep {flag}"
    return None


def absolute_path(path: str | None) -> str | None:
    """A table's path as an absolute one (``~`` expanded, relative to the current working folder), so that it
    means the same from any other folder; ``None`` and URLs (``s3://``) stay as they are."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True)
class TextFormat:
    """How a text table is written (the data module's arguments of the same names): the delimiter (``None``: by
    the file's extension), the decimal mark, the mark between groups of thousands (``None``: none) and the
    file's encoding."""

    sep: str | None
    decimal: str
    thousands: str | None
    encoding: str


UTF8 = TextFormat(None, ".", None, "utf-8")  # for tables that are not text files (Parquet) and tests


def read_table(path: str | None, name: str, text: TextFormat = UTF8) -> pa.Table:
    """Read the table at ``path`` (the value of the argument ``name``) into a pyarrow Table with unique,
    whitespace-trimmed column names and dense (not dictionary-encoded) columns; empty text cells are nulls."""
    if path is None:
        raise InputError(f"{name} is not set: give the table (.csv, .tsv or .parquet) with --{name} FILE")
    if os.path.isdir(path) or (any(c in path for c in "*?[") and not os.path.exists(path)):
        raise InputError(f"{name}={path!r} is a {'folder' if os.path.isdir(path) else 'glob'}: Parquet files of a "
                         "folder or glob are read with --data.streaming true (and --data.batch_size); or give one file")
    if not os.path.isfile(path):
        raise InputError(f"{name}={path!r}: no such file")
    if is_parquet(path):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"{name}={path!r} is not a Parquet file ({str(err).splitlines()[0]})") from None
    else:
        table = _read_delimited(path, name, delimiter(path, text.sep), text)
    names = [str(c).strip() for c in table.column_names]
    seen: dict[str, int] = {}
    for i, column in enumerate(names):
        if column in seen:
            raise InputError(f"{name}={path!r} names the column {column!r} twice (columns {seen[column] + 1} and "
                             f"{i + 1}): column names must be unique")
        seen[column] = i
    table = table.rename_columns(names)
    if table.num_rows == 0:
        raise InputError(f"{name}={path!r} has a header line but no data rows")
    return dense(table)


def _read_delimited(path: str, name: str, sep: str, text: TextFormat) -> pa.Table:
    import pyarrow.csv as pcsv

    utf8 = codecs.lookup(text.encoding).name == "utf-8"
    read = pcsv.ReadOptions(encoding="utf8" if utf8 else text.encoding)
    parse = pcsv.ParseOptions(delimiter=sep)
    convert = pcsv.ConvertOptions(strings_can_be_null=True, decimal_point=text.decimal)
    try:
        table = _read_typed(pcsv, path, read, parse, convert)
        if table is None:  # the first block's types do not hold for the whole file: let pyarrow infer them all
            table = pcsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
        if utf8 and (any("\ufffd" in c for c in table.column_names) or
                     any(pa.types.is_binary(f.type) for f in table.schema)):  # pyarrow kept the bytes as they are
            raise _not_utf8(path, name)
    except UnicodeDecodeError:  # a column name that is not UTF-8, when pyarrow hands it to Python
        raise _not_utf8(path, name) from None
    except pa.ArrowInvalid as err:
        message = str(err).splitlines()[0]
        if "Empty CSV file" in message:
            raise InputError(f"{name}={path!r} is empty: expected a header line of column names, then rows of data") from None
        hint = _sep_hint(path, sep)
        raise InputError(f"{name}={path!r} cannot be read with the delimiter {_shown(sep)}: {message}"
                         + (f"; {hint}" if hint else "")) from None
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{name}={path!r} cannot be read as a delimited table: {err}") from None
    if table.num_columns == 1:
        hint = _sep_hint(path, sep)
        if hint:
            raise InputError(f"{name}={path!r} reads as a single column {table.column_names[0]!r} with the delimiter "
                             f"{_shown(sep)}; {hint}")
    # text cells lose surrounding blanks, as numbers do ("a, b" files)
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = pc.utf8_trim_whitespace(table.column(i))
            if text.thousands is not None:
                column = _without_thousands(column, text)
            table = table.set_column(i, field.name, column)
    return table


def _without_thousands(column: pa.ChunkedArray, text: TextFormat) -> pa.ChunkedArray:
    """A text column of numbers written with ``text.thousands`` between groups of digits (``1,890.53``) as
    numbers; other text columns as they are. A cell that is not a number stays (as text) for the cell check to
    name."""
    import pyarrow.compute as pc

    if not pc.any(pc.match_substring(column, text.thousands)).as_py():
        return column
    plain = pc.replace_substring(column, text.thousands, "")
    if text.decimal != ".":
        plain = pc.replace_substring(plain, text.decimal, ".")
    try:
        return pc.cast(plain, pa.float64())
    except pa.ArrowInvalid:  # a cell that is not a number: text still, with the marks out if it is mostly numbers
        return plain if mostly_numeric(plain) else column


def _not_utf8(path: str, name: str) -> InputError:
    """The error for a text table that is not UTF-8, with where it stops being UTF-8 (``byte 0xf6 on line 1``)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    where = "a byte that is not UTF-8"
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as err:
                where = f"byte 0x{line[err.start]:02x} on line {number}"
                break
    return InputError(f"{name}={path!r} is not UTF-8 text ({where}): give its encoding, e.g. --data.encoding "
                      "latin-1 (or cp1252, what spreadsheets on Windows write)")


def _read_typed(pcsv, path: str, read, parse, convert) -> pa.Table | None:
    """Read with the column types that pyarrow infers from the file's first block, given explicitly: that
    halves the peak memory of the read (while inferring, pyarrow holds each column in several candidate types).
    ``None`` when a later row does not fit those types."""
    with pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
        schema = reader.schema
    if any(pa.types.is_null(field.type) for field in schema):  # an empty first block says nothing of the type
        return None
    typed = pcsv.ConvertOptions(strings_can_be_null=convert.strings_can_be_null, decimal_point=convert.decimal_point,
                                column_types={field.name: field.type for field in schema})
    try:
        return pcsv.read_csv(path, read_options=read, parse_options=parse, convert_options=typed)
    except pa.ArrowInvalid:
        return None


def dense(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns (pandas categoricals saved as Parquet) as plain columns of their values."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def is_text(column: pa.ChunkedArray) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def is_number(column: pa.ChunkedArray) -> bool:
    t = column.type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t)


def mostly_numeric(column: pa.ChunkedArray) -> bool:
    """A numeric column, or a text column whose non-empty cells are mostly numbers (a few typos in a numeric
    column must be reported, not make the column turn into categories)."""
    if is_number(column):
        return True
    if not is_text(column):
        return False
    import pandas as pd

    present = pd.Series(column.drop_null().to_numpy(zero_copy_only=False))
    if len(present) == 0:
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().mean() > 0.5)


HINT_VALUES = 10_000  # distinct values of a text column that number_hint reads
GROUPS = {",": r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?", ".": r"[+-]?\d{1,3}(\.\d{3})+(,\d*)?",
          " ": r"[+-]?\d{1,3}( \d{3})+([.,]\d*)?", "'": r"[+-]?\d{1,3}('\d{3})+([.,]\d*)?"}


def number_hint(column: pa.ChunkedArray, text: TextFormat) -> str | None:
    """For a text column whose cells are mostly numbers written in a way that ``text`` does not read (a decimal
    comma: ``29,37``; marks between groups of thousands: ``1,890.53``), what it holds and the flag that reads it;
    else ``None``. Each distinct value is parsed once and weighs as many rows as hold it; only the
    :data:`HINT_VALUES` most frequent are read, so that a text column of a big table is not parsed whole."""
    if not is_text(column):
        return None
    import pandas as pd
    import pyarrow.compute as pc

    counts = pc.value_counts(column.drop_null())
    weights = counts.field("counts").to_numpy()
    if len(weights) == 0:
        return None
    top = np.argpartition(-weights, HINT_VALUES)[:HINT_VALUES] if len(weights) > HINT_VALUES else slice(None)
    present = pd.Series(counts.field("values").to_numpy(zero_copy_only=False)[top])
    weights = weights[top]

    def mostly(mask: pd.Series) -> bool:
        return bool(weights[mask.to_numpy()].sum() > 0.5 * weights.sum())

    plain = pd.to_numeric(present, errors="coerce").notna()
    comma = present.str.contains(",", regex=False)
    decimal_comma = (comma.any() and text.decimal == "." and
                     mostly(plain | pd.to_numeric(present.str.replace(",", ".", regex=False), errors="coerce").notna()))
    if text.thousands is None:
        for mark, pattern in GROUPS.items():
            grouped = present.str.fullmatch(pattern)
            if grouped.any() and mostly(grouped | plain):
                example = present[grouped].iloc[0]
                also = " (or --data.decimal ',' if the comma is the decimal mark)" if decimal_comma else ""
                return (f"holds numbers with {mark!r} between groups of thousands ({example!r}): add "
                        f"--data.thousands {mark!r}{also}")
    if decimal_comma:
        return f"holds numbers with a decimal comma ({present[comma].iloc[0]!r}): add --data.decimal ','"
    return None


def values(column: pa.ChunkedArray) -> np.ndarray:
    """A column's cells as numpy: float64 (NaN for empty) for numbers, else objects (``None`` for empty)."""
    return as_float(column) if is_number(column) else column.to_numpy(zero_copy_only=False)


def as_float(column: pa.ChunkedArray) -> np.ndarray:
    """A column of numbers (or true/false) as float64, NaN for empty cells; integers beyond 2^53 are rounded to
    the nearest float (as numpy rounds them), not refused."""
    return column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def type_name(column: pa.ChunkedArray) -> str:
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return "bytes that are not UTF-8 text (save the file as UTF-8)"
    return f"values of type {column.type}"


def line_number(path: str, index: int, sep: str) -> int | None:
    """Line of a text table (1-based, header included) on which data row ``index`` (0-based, blank lines
    skipped) starts; ``None`` for Parquet or if the file cannot be scanned."""
    if is_parquet(path):
        return None
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f, delimiter=sep)
            count, consumed, header = -1, 0, False
            for record in reader:
                start, consumed = consumed + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if not header:
                    header = True
                    continue
                count += 1
                if count == index:
                    return start
    except (OSError, csv.Error):
        return None
    return None


def where_row(path: str, index: int, sep: str) -> str:
    """``data row N (line L of the file)`` for a 0-based row of a table read from ``path``."""
    line = line_number(path, index, sep)
    where = f"data row {index + 1}"
    return f"{where} (line {line} of the file)" if line is not None else where


# --- Parquet files read a row group at a time ---------------------------------------------------------------------
# measured on figure 7 of the bench (4M x 16, row groups of 131,072 rows): 1 column and 32,768 rows took a fit's
# peak above a tiny run's from 0.57x (4 columns, 65,536 rows) to 0.42x of the float32 table; decoding is slower
# by about 10%, which --data.cache_dir takes out of every epoch after the first
READ_ROWS = 32_768  # rows of a decoded row group handed on (encoded) at a time
READ_COLUMNS = 1  # columns of a row group decoded together


# --- the files ----------------------------------------------------------------------------------------------------
def parquet_files(path: str, name: str) -> list[str]:
    """The Parquet files that ``path`` names: itself, the ``*.parquet``/``*.pq`` files under a folder (sorted,
    hidden and ``_``-prefixed names skipped, as pyarrow's datasets do), or the files a glob matches (sorted)."""
    if any(c in path for c in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True)  # hidden and _ files skipped, as in a folder
                       if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_")))
        if not files:
            raise InputError(f"{name}={path!r} matches no file")
        return files
    if os.path.isdir(path):
        files, others = [], []
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for n in names:
                if not n.startswith((".", "_")):
                    parquet = os.path.splitext(n)[1].lower() in PARQUET
                    (files if parquet else others).append(os.path.relpath(os.path.join(folder, n), path))
        shown = listing(sorted(others)[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        if not files:
            raise InputError(f"{name}={path!r} is a folder without Parquet files (*.parquet, *.pq)"
                             + (f"; it holds {shown}" if others else ""))
        if others:
            say(f"{name}={path!r}: reading its {len(files)} Parquet file{'s' * (len(files) > 1)} only; not read: "
                f"{shown}", warning=True)
        return sorted(os.path.join(path, f) for f in files)
    if not os.path.exists(path):
        raise InputError(f"{name}={path!r}: no such file or folder")
    if os.path.splitext(path)[1].lower() not in PARQUET:
        raise InputError(f"{name}={path!r} is not Parquet: data.streaming reads Parquet files (*.parquet, *.pq), a "
                         "folder of them or a glob; convert the table, or leave data.streaming off")
    return [path]


def kind(t: pa.DataType) -> str:
    """What a column type means here: ``number``, ``text``, ``bool`` or the type itself; types of one kind agree
    across files (a column of whole numbers in one file may be float in another)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "bool"
    return str(t)


@dataclass(frozen=True)
class Piece:
    """One row group: ``rows`` rows from global row index ``start`` on."""

    file: str
    group: int
    start: int
    rows: int

    def where(self) -> str:
        return f"{self.file!r}, row group {self.group}"


class ParquetFiles:
    """The Parquet files of ``path`` as one table (see the module docstring); ``name`` is the argument that gave
    it (``data.path``), for messages."""

    def __init__(self, path: str, name: str) -> None:
        import pyarrow.parquet as pq  # here, not at import: every command would pay for it

        self.path, self.name = path, name
        self.files = parquet_files(path, name)
        self.pieces: list[Piece] = []
        self.schema: pa.Schema | None = None
        self.unified: set[str] = set()  # number columns whose type differs between the files: read as float64
        start = 0
        for file in self.files:
            try:
                meta = pq.ParquetFile(file)
            except (OSError, pa.ArrowException) as err:
                raise InputError(f"{name}={path!r}: {file!r} is not a readable Parquet file ({err})") from None
            schema = meta.schema_arrow
            if self.schema is None:
                self.schema = schema
            else:
                self._check_schema(file, schema)
            for group in range(meta.num_row_groups):
                rows = meta.metadata.row_group(group).num_rows
                if rows:
                    self.pieces.append(Piece(file, group, start, rows))
                    start += rows
        self.num_rows = start
        if not self.num_rows:
            raise InputError(f"{name}={path!r} has no rows ({len(self.files)} file{'s' * (len(self.files) > 1)})")

    def _check_schema(self, file: str, schema: pa.Schema) -> None:
        first = self.files[0]
        for field in self.schema:
            if field.name not in schema.names:
                raise InputError(f"{self.name}={self.path!r}: the files' schemas disagree: {file!r} has no column "
                                 f"{field.name!r}, which {first!r} has")
            other = schema.field(field.name).type
            if kind(other) != kind(field.type):
                raise InputError(f"{self.name}={self.path!r}: the files' schemas disagree: column {field.name!r} holds "
                                 f"{other} in {file!r} but {field.type} in {first!r}")
            if kind(other) == "number" and other != field.type:  # whole numbers in one file, floats in another
                self.schema = self.schema.set(self.schema.get_field_index(field.name), field.with_type(pa.float64()))
                self.unified.add(field.name)
        extra = [n for n in schema.names if n not in self.schema.names]
        if extra:
            raise InputError(f"{self.name}={self.path!r}: the files' schemas disagree: {file!r} has the column"
                             f"{'s' * (len(extra) > 1)} {listing(extra)}, which {first!r} lacks")

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    def read(self, piece: Piece, columns: list[str], rows: int = READ_ROWS) -> Iterator[tuple[int, pa.Table]]:
        """The piece's ``columns`` in blocks of at most ``rows`` rows: ``(offset in the piece, table)``;
        dictionary columns decoded to their values. The row group is decoded whole, :data:`READ_COLUMNS` columns
        at a time (pyarrow's record-batch reader holds about 3.5 times as much memory while it decodes, and is
        slower), and served in zero-copy slices."""
        import pyarrow.parquet as pq

        try:  # a column at a time: while it decodes, pyarrow holds about three copies of what it decodes
            # (not memory-mapped: that decodes 1.3 times as fast, but the mapped pages add about 25 MiB to the peak)
            reader = pq.ParquetFile(piece.file)
            parts = [reader.read_row_group(piece.group, columns=columns[i:i + READ_COLUMNS], use_threads=True)
                     for i in range(0, len(columns), READ_COLUMNS)]
            group = dense(pa.Table.from_arrays([c for part in parts for c in part.columns], names=columns))
            for i, c in enumerate(columns):
                if c in self.unified and group.column(i).type != pa.float64():
                    group = group.set_column(i, c, group.column(i).cast(pa.float64(), safe=False))
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{self.name}={self.path!r}: cannot read {piece.where()} ({err})") from None
        for offset in range(0, group.num_rows, rows):
            yield offset, group.slice(offset, rows)
        del group, parts
        pa.default_memory_pool().release_unused()  # hand the row group's pages back, not keep them for the next

    def sample(self, rows: int = 10_000) -> pa.Table:
        """The columns as their roles are decided from them: up to ``rows`` rows of the first piece for the text
        columns (to tell numbers written as text from categories) and the 64-bit integer ones (to tell
        identifiers beyond 2^53); the others, whose kind their type tells, as
        nulls of their type. Only the text columns are read, without pre-buffering the row group."""
        import pyarrow.parquet as pq

        piece = self.pieces[0]
        text = [f.name for f in self.schema if kind(f.type) == "text" or (pa.types.is_integer(f.type) and
                                                                         f.type.bit_width == 64)]
        n = min(rows, piece.rows)
        read = pa.table({})
        if text:
            try:
                reader = pq.ParquetFile(piece.file, pre_buffer=False)
                batch = next(reader.iter_batches(batch_size=n, row_groups=[piece.group], columns=text))
            except (OSError, pa.ArrowException) as err:
                raise InputError(f"{self.name}={self.path!r}: cannot read {piece.where()} ({err})") from None
            read = dense(pa.Table.from_batches([batch]))
            n = read.num_rows
        columns = {f.name: read[f.name] if f.name in text else pa.nulls(n, f.type) for f in self.schema}
        return pa.table(columns)

