"""The commands that take a trained model out of Python, beside LightningCLI's fit, validate, test and predict:

::

    lit-regression export --ckpt_path last [--format onnx|torch] [--output FILE]
    lit-regression serve --ckpt_path last [--port 8000] [--host 127.0.0.1] [--onnx]

Their arguments are those of :func:`lit_regression.onnx_export.export` and :func:`lit_regression.serve.serve`,
read by jsonargparse (as LightningCLI reads its own), so ``--help`` shows each with its docstring and a wrong one
gets the same one-line message as the training commands.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from lit_regression.errors import InputError

COMMANDS = {
    "export": "a trained model as one ONNX file with its preprocessing inside (or a torch.export program)",
    "serve": "a trained model behind an HTTP prediction endpoint (LitServe)",
}

DEPLOY_PACKAGES = ("onnx", "onnxruntime", "onnxscript", "litserve")  # the `deploy` extra of pyproject.toml


def _function(command: str) -> Callable:
    if command == "export":
        from lit_regression.onnx_export import export

        return export
    from lit_regression.serve import serve

    return serve


def main(args: list[str]) -> None:
    """Run ``lit-regression COMMAND ARGS...`` for a command of :data:`COMMANDS`; errors propagate (``cli.main``
    turns them into one line)."""
    command = args[0]
    try:
        result = _run(command, list(args[1:]))
    except ImportError as err:
        package = (err.name or "").split(".")[0]
        if package not in DEPLOY_PACKAGES or importlib.util.find_spec(package) is not None:
            raise  # a broken install of a package that is there keeps its traceback
        raise InputError(f"lit-regression {command} needs the package {package!r}, which is not installed: pip "
                         "install 'lit_regression[deploy]' (make setup installs it)") from None
    if command == "export":
        model, description = result
        print(f"exported:        {model}")
        print(f"description:     {description}")


def _switches(function: Callable, args: list[str]) -> list[str]:
    """``args`` where a true/false option given alone (``--onnx``) is ``--onnx true``, as a switch reads."""
    import inspect

    parameters = inspect.signature(function).parameters.items()
    switches = {f"--{name}" for name, p in parameters if p.annotation in (bool, "bool")}
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in switches and (i + 1 == len(args) or args[i + 1].startswith("--")):
            out.append("true")
    return out


def _run(command: str, args: list[str]):
    from jsonargparse import ArgumentParser

    function = _function(command)
    parser = ArgumentParser(prog=f"lit-regression {command}", exit_on_error=False, default_env=False,
                            allow_abbrev=False, description=f"lit-regression {command}: {COMMANDS[command]}")
    parser.add_function_arguments(function, as_group=False)
    config = parser.parse_args(_switches(function, args))
    return function(**{k: v for k, v in vars(parser.instantiate_classes(config)).items() if k != "__path__"})
