"""Prompt rendering: Jinja templates in, chat messages out.

Shared by the chat and the batch operator. Three rules shape this module:

* **A prompt is rendered exactly once.** Jinja never evaluates text that a variable substitutes, so a
  value pulled from XCom that happens to contain ``{{ var.value.secret }}`` or ``{% if %}`` reaches the
  model literally. The only way to break that is to render the result a second time, and nothing
  here does. Values that are data from the start (an ``XComArg``, ``airflow.sdk.literal(...)``) are
  resolved, never rendered.
* **Prompts render in a sandbox with StrictUndefined**, whatever the DAG's own Jinja settings (a DAG
  may render its other fields as native objects or with a lenient ``Undefined``). A missing variable
  is an error that names the variable, the template and the line, raised before any request is sent.
* **Template files are found the way Airflow finds them**: through the given environment's loader,
  which for a task is the DAG folder plus ``template_searchpath``.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union
from urllib.parse import urlsplit

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from airflow_openrouter.exceptions import PromptRenderError

if TYPE_CHECKING:
    from types import TracebackType

    from airflow.sdk import ObjectStoragePath

TEMPLATE_EXTENSIONS: tuple[str, ...] = (".j2", ".jinja2", ".md", ".txt")
"""A prompt string ending in one of these is a template *file name*, as with Airflow's ``template_ext``."""

# Schemes sent to OpenRouter as they are; anything else with a scheme is read through ObjectStoragePath.
_URL_SCHEMES = frozenset({"http", "https", "data"})
_UNDEFINED_VARIABLE = re.compile(r"^'(?P<name>[^']+)' is undefined$")


def prompt_environment(base: jinja2.Environment | None = None) -> SandboxedEnvironment:
    """A sandboxed, StrictUndefined environment that finds templates and macros where *base* does.

    *base* is normally the task's environment (``operator.get_template_env()``). A sandboxed *base*
    is overlaid, which keeps the user's ``jinja_environment_kwargs``, filters and macros; a native
    one (``render_template_as_native_obj=True``) is not reused, because a prompt must render to text.
    """
    if isinstance(base, SandboxedEnvironment):
        return base.overlay(undefined=jinja2.StrictUndefined)
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    if base is not None:
        env.loader = base.loader
        env.filters.update(base.filters)
        env.tests.update(base.tests)
        env.globals.update(base.globals)
    return env


class PromptTemplate:
    """A compiled prompt template that can be rendered many times (e.g. once per batch item).

    Build it with :meth:`load`; :meth:`render` returns the text or raises :class:`PromptRenderError`.
    """

    def __init__(self, template: jinja2.Template, name: str) -> None:
        self._template = template
        self.name = name

    @classmethod
    def load(
        cls,
        source: str,
        env: jinja2.Environment | None = None,
        *,
        field: str = "prompt",
        extensions: Sequence[str] = TEMPLATE_EXTENSIONS,
    ) -> PromptTemplate:
        """Compile inline template text, or load a template file when *source* ends in one of *extensions*.

        :param source: inline Jinja text, or a file name (``prompts/summary.j2``) that *env*'s loader finds.
        :param env: where files, filters and macros come from; wrapped by :func:`prompt_environment`.
        :param field: names an inline template in errors (``"inline system_prompt"``).
        :param extensions: the file extensions of templates (an operator passes its ``template_ext``).
        """
        sandbox = prompt_environment(env)
        is_file = source.endswith(tuple(extensions))
        name = source if is_file else f"inline {field}"
        try:
            template = sandbox.get_template(source) if is_file else sandbox.from_string(source)
        except jinja2.TemplateNotFound as exc:
            raise PromptRenderError(
                f"template file {exc.name!r} not found in {_search_path(sandbox)}. Text that ends in one of"
                f" {', '.join(extensions)} is read as a file name",
                template_name=name,
            ) from exc
        except jinja2.TemplateSyntaxError as exc:
            raise PromptRenderError(
                f"syntax error: {exc.message}", template_name=exc.filename or name, lineno=exc.lineno
            ) from exc
        return cls(template, name)

    def render(self, variables: Mapping[str, Any] | None = None, /, **more: Any) -> str:
        """Render with *variables* (usually the task context plus prompt_vars) and *more* on top."""
        try:
            return self._template.render({**(variables or {}), **more})
        except Exception as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> PromptRenderError:
        filename, lineno = _template_frame(exc.__traceback__)
        # Jinja names inline templates "<template>"; an error inside an included file names that file.
        name = self.name if filename in (None, "<template>", self._template.filename) else filename
        if isinstance(exc, jinja2.TemplateError):
            problem = exc.message or type(exc).__name__
        else:
            problem = f"{type(exc).__name__}: {exc}"
        match = _UNDEFINED_VARIABLE.match(problem) if isinstance(exc, jinja2.UndefinedError) else None
        return PromptRenderError(
            problem, template_name=name, lineno=lineno, variable=match["name"] if match else None
        )


def _template_frame(tb: TracebackType | None) -> tuple[str | None, int | None]:
    """File name and line of the innermost template frame of a Jinja traceback.

    Jinja rewrites tracebacks so that template code shows up as fake frames marked by a
    ``__jinja_exception__`` global, with the template's file name and line.
    """
    found: tuple[str | None, int | None] = (None, None)
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _search_path(env: jinja2.Environment) -> str:
    paths = getattr(env.loader, "searchpath", None)
    return f"the template search path {list(paths)}" if paths else "the template search path (no DAG folder)"


class _Resolvable(Protocol):
    def resolve(self, context: Mapping[str, Any]) -> Any: ...


def render_prompt_value(
    value: Any,
    env: jinja2.Environment | None,
    variables: Mapping[str, Any],
    *,
    field: str,
    data_ids: Set[int] = frozenset(),
    extensions: Sequence[str] = TEMPLATE_EXTENSIONS,
) -> Any:
    """Render a prompt-shaped value once: a prompt string, a ``messages`` list, or nested parts of one.

    * strings are templates (inline, or a file name ending in a template extension);
    * an ``XComArg`` or ``literal(...)`` is data: it is resolved against *variables* and not rendered;
    * lists, tuples and dicts are walked (dict keys are kept as they are);
    * objects whose id is in *data_ids* are data too: Airflow passes the ids of values it already
      resolved from XCom for a mapped task (``.expand(prompt=...)``);
    * anything else is returned unchanged.

    :param field: the field's name, used to label inline templates in errors (``messages[1].content``).
    :param extensions: the file extensions of templates (the operator's ``template_ext``).
    """
    if id(value) in data_ids:
        return value
    if isinstance(value, str):
        return PromptTemplate.load(value, env, field=field, extensions=extensions).render(variables)
    if _is_resolvable(value):
        return value.resolve(variables)

    def render_part(part: Any, label: str) -> Any:
        return render_prompt_value(
            part, env, variables, field=label, data_ids=data_ids, extensions=extensions
        )

    if isinstance(value, Mapping):
        return {k: render_part(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_part(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def _is_resolvable(value: Any) -> bool:
    # XComArg and LiteralValue both implement ResolveMixin.resolve(context). Paths have a resolve()
    # too, with another meaning, and are never prompt parts anyway.
    return callable(getattr(value, "resolve", None)) and not isinstance(value, os.PathLike)


# --- messages --------------------------------------------------------------------------------------


ImageSource = Union[str, os.PathLike, "ObjectStoragePath"]


def build_messages(
    *,
    prompt: str | None = None,
    system_prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    images: Sequence[ImageSource] = (),
    base_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """The chat ``messages`` of a request: system prompt, then *messages*, then the user *prompt*.

    *messages* is a conversation so far (OpenAI chat format); *prompt* is appended as the last user
    turn, with *images* as ``image_url`` content parts. At least one of the two must be given.
    """
    if not prompt and not messages:
        raise ValueError("Nothing to send: pass a prompt or a non-empty messages list.")
    if images and not prompt:
        raise ValueError("images are attached to the prompt: pass a prompt along with them.")
    built: list[dict[str, Any]] = []
    if system_prompt:
        built.append({"role": "system", "content": system_prompt})
    for i, message in enumerate(messages or ()):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"messages[{i}] must be a dict with a 'role' (got {message!r:.80}).")
        built.append(dict(message))
    if prompt:
        content: str | list[dict[str, Any]] = prompt
        if images:
            content = [{"type": "text", "text": prompt}, *(image_part(i, base_dir=base_dir) for i in images)]
        built.append({"role": "user", "content": content})
    return built


def image_part(image: ImageSource, *, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """An ``image_url`` content part.

    https and data URLs are passed on as they are. Files are read and sent inline as base64 data URLs
    with the MIME type of their extension: a local path (relative to *base_dir*, normally the DAG
    folder), an ``ObjectStoragePath``, or a URI such as ``s3://conn@bucket/cat.png`` or ``file:///...``.
    """
    return {"type": "image_url", "image_url": {"url": _image_url(image, base_dir)}}


def _image_url(image: ImageSource, base_dir: str | os.PathLike | None) -> str:
    from airflow.sdk import ObjectStoragePath

    path: Path | ObjectStoragePath
    if isinstance(image, ObjectStoragePath):
        path = image
    elif isinstance(image, str) and (scheme := urlsplit(image).scheme.lower()) in _URL_SCHEMES:
        return image
    elif isinstance(image, str) and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        path = ObjectStoragePath(image)
    else:
        path = Path(base_dir or ".", image)
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise ValueError(
            f"Cannot tell the image type of {str(path)!r} from its extension (got {mime or 'nothing'});"
            " use a file ending in .png, .jpg, .jpeg, .gif or .webp, or pass a data: URL."
        )
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{mime};base64,{data}"
