"""Each column's role in a table: numeric feature, categorical feature (with its levels), target, id, or ignored
with the reason; decided once from the training rows, whatever holds them (:mod:`lit_regression.sources`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from lit_regression.cells import no_empty_label
from lit_regression.errors import InputError, count, say
from lit_regression.preprocessing import fit_levels
from lit_regression.sources import TableSource
from lit_regression.tables import (TextFormat, is_number, is_text, listing, mostly_numeric, number_hint, type_name,
                                   values)


def kind(data: pa.ChunkedArray, given_levels: bool, forced: bool) -> str | None:
    """A column's kind from its cells: ``numeric``, ``categorical`` or ``None`` (no feature)."""
    if given_levels:
        return "categorical"
    if not forced and (is_number(data) or (is_text(data) and mostly_numeric(data))):
        return "numeric"
    if forced or is_text(data) or pa.types.is_boolean(data.type):
        return "categorical"
    return None


def widest_integer(data: pa.ChunkedArray) -> int | None:
    """The largest magnitude of an integer column whose values go beyond 2^53 (where float64 stops telling whole
    numbers apart), else ``None``."""
    if not pa.types.is_integer(data.type) or data.null_count == len(data):
        return None
    import pyarrow.compute as pc

    bounds = pc.min_max(data)
    wide = max(abs(bounds["min"].as_py()), abs(bounds["max"].as_py()))
    return wide if wide > 2**53 else None


def count_levels(source: TableSource, columns: list[str], limit: int) -> tuple[dict[str, Counter], set[str]]:
    """The values of ``columns`` in the training rows and how often each occurs (empty cells left out), and the
    columns whose counting stopped, after the block in which they passed ``limit`` distinct values (so that a
    streamed identifier is not counted whole). Only these columns are read."""
    counts = {c: Counter() for c in columns}
    stopped: set[str] = set()
    if columns:
        for block in source.blocks("train", columns):
            table = block.table if block.keep is None else block.table.take(pa.array(block.keep))
            for c in columns:
                if len(counts[c]) > limit:
                    stopped.add(c)
                else:  # pyarrow counts
                    found = table[c].value_counts()
                    counts[c].update(dict(zip(values(found.field("values")).tolist(),
                                              found.field("counts").to_pylist())))
    for counter in counts.values():
        for empty in [v for v in counter if v is None or (isinstance(v, float) and np.isnan(v))]:
            del counter[empty]
    return counts, stopped


def distinct_labels(source: TableSource, column: str) -> list:
    """The distinct labels of ``column`` over every row of the training table, sorted (numbers before text); an
    empty label is an error naming its row."""
    labels: set = set()
    for block in source.blocks(None, [column]):
        no_empty_label(block.table, column, block.place)
        labels.update(block.table[column].unique().to_pylist())
    return sorted(labels, key=lambda v: (isinstance(v, str), v))


def levels_of(counter: Counter) -> list:
    """The sorted distinct values of a categorical column, as scikit-learn sorts them."""
    return fit_levels(np.array(list(counter), dtype=object)) if counter else []


class Roles:
    """Every column of the training table with its role: ``features`` (the table's order), ``categories`` (the
    levels of each categorical one), ``levels`` (their counts in the training rows) and ``roles`` (one dict per
    column, as ``report.json`` keeps them)."""

    def __init__(self, features: list[str], categories: dict[str, list], levels: dict[str, Counter],
                 roles: list[dict[str, Any]]) -> None:
        self.features, self.categories, self.levels, self.roles = features, categories, levels, roles


def resolve(source: TableSource, targets: list[str], id_column: str | None, features: list[str] | None,
            categorical: list[str] | None, impute: Any, categories: dict[str, list] | None,
            max_categories: int, text: TextFormat) -> Roles:
    """Decide each column's role (the data module's arguments of the same names): a column of numbers (or
    of text that is mostly numbers) is numeric; text, true/false and the ``categorical`` columns are categorical,
    with the sorted values of the training rows as levels (one level, none, or more than ``max_categories``:
    ignored, with the reason); other types are ignored."""
    table = source.sample()
    names = table.column_names
    place = source.place
    if features is not None:
        source.require(list(features), "feature")
    for arg, given in (("categorical", categorical), ("impute", impute if isinstance(impute, dict) else None),
                       ("categories", categories)):
        absent = [c for c in (given or []) if c not in names]
        if absent:
            raise InputError(f"data.{arg} names {listing(absent)}, which {place} does not have; its columns are: "
                             f"{listing(names)}")
    explicit = features is not None
    candidates = list(features) if explicit else [c for c in names if c not in targets and c != id_column]
    forced = set(categorical or [])
    given_levels = dict(categories or {})
    kinds = {column: kind(table[column], column in given_levels, column in forced) for column in candidates}
    to_count = [c for c, k in kinds.items() if k == "categorical" and c not in given_levels]
    counted, stopped = count_levels(source, to_count, max_categories)
    roles: dict[str, dict[str, Any]] = {}
    chosen, levels_by_column = [], {}
    for column in candidates:
        data, k = table[column], kinds[column]
        hint = number_hint(data, text) if k == "categorical" and column not in forced else None
        if hint is not None:
            raise InputError(f"{place}: column {column!r} {hint}")
        reason = None
        if k is None:
            reason = f"holds {type_name(data)}"
        elif k == "numeric" and (wide := widest_integer(data)) is not None:
            if not explicit:
                reason = (f"holds whole numbers beyond 2^53 ({wide}), which floats cannot tell apart: an identifier? "
                          "name it with --data.id_column, or in data.features to use it as a rounded number")
            else:
                say(f"{place}: feature column {column!r} holds whole numbers beyond 2^53 ({wide}): used as floats, "
                    "rounded to 7 significant digits (float32 inputs)", warning=True)
        elif k == "numeric":  # else the pass of statistics finds a column without values
            if source.sample_is_whole and is_number(data) and (data.null_count == len(data) or
                                                               np.isnan(values(data)).all()):
                reason = "has no values"
        else:
            levels = given_levels.get(column) or levels_of(counted.get(column, Counter()))
            if not levels:
                reason = "has no values in the training rows"
            elif len(levels) == 1:
                reason = f"has a single level {levels[0]!r} in the training rows: nothing to learn from it"
            elif len(levels) > max_categories:
                many = f"more than {max_categories}" if column in stopped else len(levels)
                reason = (f"has {many} distinct values in the training rows, more than "
                          f"data.max_categories={max_categories}")
                if column in forced or explicit:
                    raise InputError(f"{place}: categorical column {column!r} {reason}; raise data.max_categories "
                                     "or leave the column out")
            else:
                levels_by_column[column] = levels
        if reason is not None:
            if explicit and k is None:
                raise InputError(f"{place}: feature column {column!r} {reason}; it cannot be a feature")
            roles[column] = {"column": column, "role": "ignored", "reason": reason}
            continue
        chosen.append(column)
        roles[column] = ({"column": column, "role": "numeric feature"} if column not in levels_by_column else
                         {"column": column, "role": "categorical feature", "levels": len(levels_by_column[column])})
    for column in names:
        if column in targets:
            roles[column] = {"column": column, "role": "target"}
        elif column == id_column:
            roles[column] = {"column": column, "role": "id"}
        elif column not in roles:
            roles[column] = {"column": column, "role": "ignored", "reason": "not in data.features"}
    if not chosen:
        raise InputError(f"{place} has no column to use as a feature besides the target {listing(targets)}; its "
                         f"columns are: {listing(names)}")
    return Roles(chosen, levels_by_column, counted, [roles[c] for c in names])


def given_roles(targets: list[str], id_column: str | None, features: list[str], categories: dict[str, list]
                ) -> list[dict[str, Any]]:
    """The roles as the arguments give them (a checkpoint's): targets, id, features with their levels."""
    roles = [{"column": t, "role": "target"} for t in targets]
    if id_column is not None:
        roles.append({"column": id_column, "role": "id"})
    for feature in features:
        levels = categories.get(feature)
        roles.append({"column": feature, "role": "numeric feature"} if levels is None else
                     {"column": feature, "role": "categorical feature", "levels": len(levels)})
    return roles


def describe(place: str, roles: list[dict[str, Any]]) -> str:
    """The column roles as a few aligned lines."""
    width = max(len(r["column"]) for r in roles) + 2
    lines = [f"Columns of {place}:"]
    for r in roles:
        role = r["role"]
        if "levels" in r:
            reference = f", reference {r['reference']!r}" if "reference" in r else ""
            role += f" ({count(r['levels'], 'level')}{reference})"
        if "reason" in r:
            role += f": {r['reason']}"
        lines.append(f"  {r['column']:<{width}}{role}")
    return "\n".join(lines)
