"""Prompt rendering: Jinja templates in, chat messages out.

Shared by the chat and the batch operator. Five rules shape this module:

* **A prompt is rendered exactly once.** Jinja never evaluates text that a variable substitutes, so a
  value pulled from XCom that happens to contain ``{{ var.value.secret }}`` or ``{% if %}`` reaches the
  model literally. The only way to break that is to render the result a second time, and nothing
  here does. Values that are data from the start (an ``XComArg``, ``airflow.sdk.literal(...)``) are
  resolved, never rendered.
* **Upstream data is data.** Which values are templates is decided by where they came from (see
  :mod:`airflow_openrouter.operators._upstream`): values an upstream task produced reach this module
  wrapped as data (``airflow.sdk.literal``) or as ``XComArg``s, and are resolved, never rendered, nor
  read as template file names.
* **Prompts render in a sandbox with StrictUndefined**, whatever the DAG's own Jinja settings (a DAG
  may render its other fields as native objects or with a lenient ``Undefined``). A missing variable
  is an error that names the variable, the template and the line, raised before any request is sent.
* **Template files are found the way Airflow finds them**: through the given environment's loader,
  which for a task is the DAG folder plus ``template_searchpath``.
* **Local image files stay inside the DAG folder and ``template_searchpath``** (after resolving ``..``
  and symlinks). Anything else needs an explicit URI (``file://``, ``s3://``, an ``ObjectStoragePath``)
  written by the DAG author: an upstream value can name an https or data URL, or a file inside those
  folders, and nothing else.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
from collections.abc import Container, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from airflow_openrouter._params import TEMPLATE_EXTENSIONS, is_resolvable
from airflow_openrouter.exceptions import OpenRouterConfigError, PromptRenderError

__all__ = [
    "TEMPLATE_EXTENSIONS",
    "ImageSource",
    "PromptTemplate",
    "build_messages",
    "image_part",
    "is_resolvable",
    "prompt_environment",
    "render_prompt_value",
]

if TYPE_CHECKING:
    from types import TracebackType

    from airflow.sdk import ObjectStoragePath

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

    :param template: the compiled template, or a ``str``: text that is data, which every render
        returns as it is.
    """

    def __init__(self, template: jinja2.Template | str, name: str) -> None:
        self._template = template
        self.name = name

    @classmethod
    def load(
        cls,
        source: Any,
        env: jinja2.Environment | None = None,
        *,
        field: str = "prompt",
        extensions: Sequence[str] = TEMPLATE_EXTENSIONS,
    ) -> PromptTemplate:
        """Compile inline template text, or load a template file when *source* ends in one of *extensions*.

        :param source: inline Jinja text, or a file name (``prompts/summary.j2``) that *env*'s loader
            finds; or upstream text marked as data (``airflow.sdk.literal(text)``), which is never
            rendered.
        :param env: where files, filters and macros come from; wrapped by :func:`prompt_environment`.
        :param field: names an inline template in errors (``"inline system_prompt"``).
        :param extensions: the file extensions of templates (an operator passes its ``template_ext``).
        """
        if not isinstance(source, str):
            return cls(_data_text(source, field), f"upstream {field}")
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
                f"syntax error: {_clause(exc.message or '')}",
                template_name=exc.filename or name,
                lineno=exc.lineno,
            ) from exc
        return cls(template, name)

    def render(self, variables: Mapping[str, Any] | None = None, /, **more: Any) -> str:
        """Render with *variables* (usually the task context plus prompt_vars) and *more* on top."""
        if isinstance(self._template, str):
            return self._template
        try:
            return self._template.render({**(variables or {}), **more})
        except Exception as exc:
            raise self._error(self._template, exc) from exc

    def _error(self, template: jinja2.Template, exc: Exception) -> PromptRenderError:
        filename, lineno = _template_frame(exc.__traceback__)
        # Jinja names inline templates "<template>"; an error inside an included file names that file.
        name = self.name if filename in (None, "<template>", template.filename) else filename
        if isinstance(exc, jinja2.TemplateError):
            problem = _clause(exc.message or type(exc).__name__)
        else:
            problem = _clause(f"{type(exc).__name__}: {exc}")
        match = _UNDEFINED_VARIABLE.match(problem) if isinstance(exc, jinja2.UndefinedError) else None
        return PromptRenderError(
            problem, template_name=name, lineno=lineno, variable=match["name"] if match else None
        )


def _clause(message: str) -> str:
    """*message* without its final period: PromptRenderError ends the sentence itself."""
    return message.rstrip().removesuffix(".")


def _data_text(source: Any, field: str) -> str:
    """The text of a prompt that is upstream data (``literal(text)``), which is never rendered."""
    value = _literal_value(source)
    if value is _NOT_LITERAL:
        raise OpenRouterConfigError(
            f"{field} is an upstream value ({type(source).__name__}) that was not resolved: this prompt is "
            "not a templated field. Write the prompt in the DAG file and pass upstream values in "
            "prompt_vars={'name': some_task.output}."
        )
    if not isinstance(value, str):
        raise OpenRouterConfigError(f"{field} must be text, got {type(value).__name__} from upstream.")
    return value


_NOT_LITERAL = object()


def _literal_value(source: Any) -> Any:
    from airflow.sdk import literal

    return source.value if isinstance(source, type(literal(None))) else _NOT_LITERAL


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


def render_prompt_value(
    value: Any,
    env: jinja2.Environment | None,
    variables: Mapping[str, Any],
    *,
    field: str,
    extensions: Sequence[str] = TEMPLATE_EXTENSIONS,
) -> Any:
    """Render a prompt-shaped value once: a prompt string, a ``messages`` list, or nested parts of one.

    * strings are templates (inline, or a file name ending in a template extension): the caller passes
      only what the DAG author wrote as such;
    * an ``XComArg`` or ``literal(...)`` is data: it is resolved against *variables* and not rendered
      (upstream values of a mapped task arrive as ``literal(...)``, see
      :mod:`airflow_openrouter.operators._upstream`);
    * lists, tuples and dicts are walked (dict keys are kept as they are);
    * anything else is returned unchanged.

    :param field: the field's name, used to label inline templates in errors (``messages[1].content``).
    :param extensions: the file extensions of templates (the operator's ``template_ext``).
    """
    if isinstance(value, str):
        return PromptTemplate.load(value, env, field=field, extensions=extensions).render(variables)
    if is_resolvable(value):
        return value.resolve(variables)

    def render_part(part: Any, label: str) -> Any:
        return render_prompt_value(part, env, variables, field=label, extensions=extensions)

    if isinstance(value, Mapping):
        return {k: render_part(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_part(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return value


# --- messages --------------------------------------------------------------------------------------


ImageSource = Union[str, os.PathLike, "ObjectStoragePath"]


def build_messages(
    *,
    prompt: str | None = None,
    system_prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    images: Sequence[ImageSource] = (),
    image_roots: Sequence[str | os.PathLike] = (),
    upstream_images: Container[int] = (),
) -> list[dict[str, Any]]:
    """The chat ``messages`` of a request: system prompt, then *messages*, then the user *prompt*.

    *messages* is a conversation so far (OpenAI chat format); *prompt* is appended as the last user
    turn, with *images* as ``image_url`` content parts (see :func:`image_part`). At least one of the
    two must be given.

    :param image_roots: the folders local image paths are confined to (the DAG folder, then
        ``template_searchpath``); relative paths are looked up in them in order.
    :param upstream_images: the indexes of *images* that came from an upstream task.
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
            parts = [
                image_part(image, roots=image_roots, from_upstream=i in upstream_images)
                for i, image in enumerate(images)
            ]
            content = [{"type": "text", "text": prompt}, *parts]
        built.append({"role": "user", "content": content})
    return built


def image_part(
    image: ImageSource, *, roots: Sequence[str | os.PathLike] = (), from_upstream: bool = False
) -> dict[str, Any]:
    """An ``image_url`` content part.

    https and data URLs are passed on as they are. Files are read and sent inline as base64 data URLs
    with the MIME type of their extension:

    * a local path, relative to the first of *roots* that has it, or absolute: only inside *roots*
      (the DAG folder and ``template_searchpath``), after resolving ``..`` and symlinks;
    * an ``ObjectStoragePath`` or a URI such as ``s3://conn@bucket/cat.png`` or ``file:///...``: only
      when the DAG author wrote it, never when it came from upstream (*from_upstream*).

    :raises OpenRouterConfigError: the image is outside what it may read, or not an image.
    """
    from airflow.sdk import ObjectStoragePath

    path: Path | ObjectStoragePath
    scheme = urlsplit(image).scheme.lower() if isinstance(image, str) else ""
    if scheme in _URL_SCHEMES:
        return {"type": "image_url", "image_url": {"url": image}}
    if isinstance(image, ObjectStoragePath) or len(scheme) > 1:  # a one-letter "scheme" is a drive
        if from_upstream:
            raise OpenRouterConfigError(
                f"Image {_shown(image)} came from an upstream task, and an upstream value may name only an "
                "https or data: URL or a file inside the DAG folder or template_searchpath. To read it from "
                "storage, write the URI in the DAG file, or have the upstream task pass a data: URL."
            )
        path = image if isinstance(image, ObjectStoragePath) else ObjectStoragePath(image)
    else:
        path = _confined_path(image, roots)
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise OpenRouterConfigError(
            f"Cannot tell the image type of {str(path)!r} from its extension (got {mime or 'nothing'});"
            " use a file ending in .png, .jpg, .jpeg, .gif or .webp, or pass a data: URL."
        )
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _confined_path(image: str | os.PathLike, roots: Sequence[str | os.PathLike]) -> Path:
    """The real path of a local image file inside one of *roots*, or an error saying why not."""
    if not roots:
        raise OpenRouterConfigError(
            f"Image {_shown(image)} is a local path, but the task has no DAG folder to find it in. Pass "
            "a file:// URI (or an ObjectStoragePath) instead."
        )
    real_roots = [Path(root).resolve() for root in roots]
    relative = Path(image)
    for candidate in [relative] if relative.is_absolute() else [root / relative for root in real_roots]:
        real = candidate.resolve()  # follows symlinks and removes ".."
        if not any(real.is_relative_to(root) for root in real_roots):
            raise OpenRouterConfigError(
                f"Image {_shown(image)} is outside the DAG folder and template_searchpath "
                f"({', '.join(map(str, real_roots))}), after resolving '..' and symlinks. Local images are "
                "read only from there; for a file elsewhere, write a file:// URI in the DAG file."
            )
        if real.is_file():
            return real
    raise OpenRouterConfigError(
        f"Image {_shown(image)} not found in the DAG folder or template_searchpath "
        f"({', '.join(map(str, real_roots))})."
    )


def _shown(image: Any) -> str:
    text = repr(str(image))
    return text if len(text) <= 120 else f"{text[:119]}…"
