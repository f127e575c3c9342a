"""The Jinja2 sandbox messages are rendered in: the built-in template and a route's own
(`template: path.j2`). Every `{{ value }}` is escaped as Pachca markdown unless it is already
safe (`markdown.Md`: links, code spans and alert text the renderer neutralised), so a template
cannot forget to escape; the sandbox keeps a template from reaching anything but its variables.
A route's template is strict: an unknown variable is an error, found by `check-config`."""

from __future__ import annotations

import traceback
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from bridge.markdown import Md, escape


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, Md) else escape(str(value))


BUILT_IN = SandboxedEnvironment(
    finalize=_finalize, trim_blocks=False, keep_trailing_newline=False
).from_string(resources.files("bridge").joinpath("templates/message.j2").read_text("utf-8"))


@lru_cache(maxsize=64)
def route_template(path: str) -> Template:
    """A route's template file, compiled once; raises TemplateError (with its line)."""
    file = Path(path)
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(file.parent)),
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=False,
    )
    return env.get_template(file.name)


def where_it_failed(exc: TemplateError, path: str) -> str:
    """`file:line: what` for an error raised while compiling or rendering `path`."""
    if isinstance(exc, TemplateSyntaxError):
        return f"{path}:{exc.lineno}: {exc.message}"
    line = next(
        (
            frame.lineno
            for frame in reversed(traceback.extract_tb(exc.__traceback__))
            if frame.filename == path or frame.filename.endswith("/" + Path(path).name)
        ),
        None,
    )
    return f"{path}:{line if line is not None else '?'}: {exc}"
