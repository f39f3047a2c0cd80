"""The arguments of :class:`~lit_regression.datamodules.TableDataModule`, checked when it is made: each bad one is
refused in one line that names it, its value and the rule."""

from __future__ import annotations

import codecs

from lit_regression.cells import key
from lit_regression.errors import InputError
from lit_regression.preprocessing import STRATEGIES
from lit_regression.tables import listing

TASKS = ("regression", "classification")
THOUSANDS = (",", ".", " ", "'")  # marks between groups of thousands


def check_arguments(path, target, features, task, sep, decimal, thousands, encoding, categorical, max_categories,
                    impute, categories, drop_first, val_fraction, test_fraction, stratify, standardize,
                    standardize_target, predict_path, id_column, classes, batch_size, shuffle, seed, on_device,
                    streaming, val_path, test_path, shuffle_buffer, cache_dir) -> tuple[str, list[str]]:
    """Refuse a bad argument of :class:`TableDataModule` in one line that names it, its value and the rule; return
    the task and the target columns."""
    if streaming:
        _check_streaming(batch_size, impute, on_device, shuffle_buffer)
    for name, value in (("val_path", val_path), ("test_path", test_path)):
        if value is not None and not streaming:
            raise InputError(f"data.{name}={value!r} is read with --data.streaming true; without it, the held-out "
                             "rows come from data.path (data.val_fraction, data.test_fraction)")
    if cache_dir is not None and not streaming:
        raise InputError(f"data.cache_dir={cache_dir!r} keeps streamed rows: it needs --data.streaming true "
                         "(without it the rows are held in memory)")
    task = task or "regression"
    if task not in TASKS:
        raise InputError(f"data.task={task!r} is invalid: expected 'regression' or 'classification'")
    targets = [target] if isinstance(target, str) else list(target or [])
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise InputError(f"data.target={target!r} is invalid: expected a column name or a list of them")
    if len(set(targets)) != len(targets):
        raise InputError(f"data.target={target!r} names a column twice")
    if task == "classification" and len(targets) != 1:
        raise InputError(f"data.target={target!r} is invalid: classification predicts one label column")
    for name, given in (("features", features), ("categorical", categorical)):
        if given is None:
            continue
        if name == "features" and len(given) == 0:
            raise InputError("data.features=[] is invalid: give at least one column, or leave it out")
        if len(set(given)) != len(given):
            raise InputError(f"data.{name}={given!r} names a column twice")
        overlap = [f for f in given if f in targets or f == id_column]
        if overlap:
            what = "target" if overlap[0] in targets else "id"
            raise InputError(f"data.{name} names the {what} column {overlap[0]!r}: it cannot be a feature")
    if id_column is not None and id_column in targets:
        raise InputError(f"data.id_column={id_column!r} is the target column")
    if sep is not None and len(sep) != 1:
        raise InputError(f"data.sep={sep!r} is invalid: expected one character, such as ';' or '\\t'")
    if decimal not in (".", ","):
        raise InputError(f"data.decimal={decimal!r} is invalid: expected '.' or ','")
    if sep is not None and sep == decimal:
        raise InputError(f"data.sep and data.decimal are both {sep!r}: a number's decimal mark cannot also "
                         "separate the columns")
    if thousands is not None and (thousands not in THOUSANDS or thousands in (decimal, sep)):
        raise InputError(f"data.thousands={thousands!r} is invalid: expected one of {listing(THOUSANDS)}, other than "
                         f"data.decimal={decimal!r} and data.sep={sep!r}")
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise InputError(f"data.encoding={encoding!r} is not an encoding Python knows: expected a name such as "
                         "'utf-8', 'latin-1' or 'cp1252'") from None
    if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 2:
        raise InputError(f"data.max_categories={max_categories!r} is invalid: expected a whole number >= 2")
    strategies = impute.values() if isinstance(impute, dict) else [impute]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise InputError(f"data.impute={impute!r} is invalid: expected one of {list(STRATEGIES)} or a mapping "
                         "{column: strategy}")
    if not isinstance(drop_first, bool):
        raise InputError(f"data.drop_first={drop_first!r} is invalid: expected true or false")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not 0 <= value < 1:
            raise InputError(f"data.{name}={value!r} is invalid: expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise InputError(
            f"data.val_fraction={val_fraction!r} and data.test_fraction={test_fraction!r} add up to "
            f"{val_fraction + test_fraction:g}: that leaves no training rows (they must add up to less than 1)"
        )
    if classes is not None:
        if task != "classification":
            raise InputError("data.classes is only for task=classification")
        if len(classes) < 2 or len({key(c) for c in classes}) != len(classes):
            raise InputError(f"data.classes={classes!r} is invalid: expected at least 2 distinct labels")
    if standardize_target and task == "classification":
        raise InputError("data.standardize_target is only for task=regression: class labels are not scaled")
    return task, targets


def _check_streaming(batch_size: int | None, impute, on_device: bool, shuffle_buffer: int) -> None:
    """Arguments that streaming cannot take, each refused in one line."""
    if batch_size is None:
        raise InputError("data.streaming needs data.batch_size: the rows are read from disk a batch at a time "
                         "(e.g. --data.batch_size 65536)")
    if "median" in (impute.values() if isinstance(impute, dict) else [impute]):
        raise InputError(f"data.impute={impute!r}: the median is not available with data.streaming (an exact median "
                         "needs every value in memory); use mean")
    if on_device:
        raise InputError("data.on_device keeps tables in device memory; with data.streaming they are read from disk "
                         "every epoch: leave one of them off")
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise InputError(f"data.shuffle_buffer={shuffle_buffer!r} is invalid: expected a whole number of rows >= 1")
