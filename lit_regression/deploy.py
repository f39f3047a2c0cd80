"""The commands that take a trained model out of Python, beside LightningCLI's ``fit``/``validate``/``test``/``predict``:

::

    lit-regression export --ckpt_path last [--format onnx|torch] [--output FILE]
    lit-regression serve --ckpt_path last [--port 8000] [--host 127.0.0.1] [--onnx true]

Their arguments are those of :func:`lit_regression.onnx_export.export` and :func:`lit_regression.serve.serve`,
read by jsonargparse (as LightningCLI reads its own), so ``--help`` shows each with its docstring and a wrong one
gets the same one-line message as the training commands.
"""

from __future__ import annotations

from collections.abc import Callable

COMMANDS = {
    "export": "a trained model as one ONNX file with its preprocessing inside (or a torch.export program)",
    "serve": "a trained model behind an HTTP prediction endpoint (LitServe)",
}


def _function(command: str) -> Callable:
    if command == "export":
        from lit_regression.onnx_export import export

        return export
    from lit_regression.serve import serve

    return serve


def main(args: list[str]) -> None:
    """Run ``lit-regression COMMAND ARGS...`` for a command of :data:`COMMANDS`; errors propagate (``cli.main``
    turns them into one line)."""
    from jsonargparse import ArgumentParser

    command, rest = args[0], list(args[1:])
    function = _function(command)
    parser = ArgumentParser(prog=f"lit-regression {command}", description=f"lit-regression {command}: {COMMANDS[command]}",
                            exit_on_error=False,
                            default_env=False, allow_abbrev=False)
    parser.add_function_arguments(function, as_group=False)
    config = parser.parse_args(rest)
    result = function(**{k: v for k, v in vars(parser.instantiate_classes(config)).items() if k != "__path__"})
    if command == "export":
        model, description = result
        print(f"exported:        {model}")
        print(f"description:     {description}")
