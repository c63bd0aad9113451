"""Prompt rendering: once, sandboxed, strict, with errors that point at the template line."""

from __future__ import annotations

import base64

import jinja2
import pytest

from airflow_openrouter.exceptions import OpenRouterConfigError
from airflow_openrouter.prompts import (
    PromptRenderError,
    PromptTemplate,
    build_messages,
    image_part,
    prompt_environment,
    render_prompt_value,
)

HOSTILE = "{{ var.value.secret }} {% if true %}evaluated{% endif %} {{ conn.x }}"


@pytest.fixture
def template_dir(tmp_path):
    (tmp_path / "summary.j2").write_text("Summarise:\n{{ doc }}\n")
    (tmp_path / "broken.j2").write_text("line one\nline two {{ missing_var }}\n")
    (tmp_path / "outer.md").write_text("intro\n{% include 'inner.txt' %}")
    (tmp_path / "inner.txt").write_text("a\nb {{ nope }}")
    return tmp_path


@pytest.fixture
def dag_env(template_dir):
    """Like a DAG's environment: a sandbox whose loader searches the DAG folder."""
    return jinja2.sandbox.SandboxedEnvironment(loader=jinja2.FileSystemLoader([str(template_dir)]))


def test_substituted_values_are_never_rendered_again():
    rendered = PromptTemplate.load("Doc: {{ doc }}").render(doc=HOSTILE)

    assert rendered == f"Doc: {HOSTILE}"


def test_template_file_is_found_through_the_environment_loader(dag_env):
    assert PromptTemplate.load("summary.j2", dag_env).render(doc="text") == "Summarise:\ntext"


def test_one_template_renders_many_times_with_different_variables():
    template = PromptTemplate.load("#{{ index }}: {{ item.title }} ({{ lang }})")

    assert [template.render({"lang": "en"}, item={"title": t}, index=i) for i, t in enumerate("ab")] == [
        "#0: a (en)",
        "#1: b (en)",
    ]


def test_undefined_variable_names_the_variable_the_file_and_the_line(dag_env):
    with pytest.raises(PromptRenderError) as info:
        PromptTemplate.load("broken.j2", dag_env).render({})

    err = info.value
    assert (err.variable, err.template_name, err.lineno) == ("missing_var", "broken.j2", 2)
    assert "'missing_var' is undefined" in str(err)
    assert "broken.j2" in str(err)
    assert "line 2" in str(err)


def test_undefined_variable_in_inline_template_names_the_field():
    with pytest.raises(PromptRenderError) as info:
        PromptTemplate.load("ok\n{{ nope }}", field="system_prompt").render({})

    assert info.value.template_name == "inline system_prompt"
    assert info.value.lineno == 2


def test_error_in_included_file_names_the_included_file(dag_env, template_dir):
    with pytest.raises(PromptRenderError) as info:
        PromptTemplate.load("outer.md", dag_env).render({})

    assert info.value.template_name == str(template_dir / "inner.txt")
    assert info.value.lineno == 2


def test_syntax_error_is_reported_at_load_with_its_line():
    with pytest.raises(PromptRenderError, match=r"line 2: syntax error"):
        PromptTemplate.load("fine\n{% if %}")


def test_missing_template_file_explains_the_extension_rule(dag_env):
    with pytest.raises(PromptRenderError, match=r"'notes\.txt' not found .* read as a file name"):
        PromptTemplate.load("notes.txt", dag_env)


def test_caller_can_add_context_to_a_render_error():
    with pytest.raises(PromptRenderError) as info:
        PromptTemplate.load("{{ x }}").render({})

    with_item = info.value.with_context("item 7")
    assert str(with_item).startswith("item 7: Cannot render")
    assert (with_item.variable, with_item.context) == ("x", "item 7")


def test_sandbox_blocks_unsafe_attribute_access():
    with pytest.raises(PromptRenderError, match="unsafe"):
        PromptTemplate.load("{{ f.__globals__ }}").render(f=test_sandbox_blocks_unsafe_attribute_access)


def test_prompt_environment_is_strict_even_when_the_dag_is_lenient(template_dir):
    lenient_native = jinja2.nativetypes.NativeEnvironment(
        loader=jinja2.FileSystemLoader([str(template_dir)]), undefined=jinja2.Undefined
    )
    lenient_native.filters["shout"] = str.upper

    env = prompt_environment(lenient_native)

    assert isinstance(env, jinja2.sandbox.SandboxedEnvironment)
    assert env.from_string("{{ 'a' | shout }}{{ 1 + 1 }}").render() == "A2"  # text, user filters kept
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ nope }}").render()


def test_render_prompt_value_resolves_data_and_renders_strings_once():
    class Upstream:  # what an XComArg or literal() looks like to the renderer
        def resolve(self, context):
            return HOSTILE

    messages = [
        {"role": "system", "content": "You help {{ team }}."},
        {"role": "user", "content": Upstream()},
    ]

    rendered = render_prompt_value(messages, None, {"team": "ops"}, field="messages")

    assert rendered == [
        {"role": "system", "content": "You help ops."},
        {"role": "user", "content": HOSTILE},
    ]


def test_upstream_values_marked_as_literal_are_never_rendered_nor_read_as_file_names(dag_env):
    from airflow.sdk import literal

    marked = [literal("from XCom: {{ not_a_variable }}"), literal("prompts/summary.j2")]

    assert render_prompt_value(marked, dag_env, {}, field="prompt") == [
        "from XCom: {{ not_a_variable }}",
        "prompts/summary.j2",
    ]


def test_a_batch_prompt_from_upstream_is_text_that_every_render_returns_as_it_is(dag_env):
    from airflow.sdk import literal

    template = PromptTemplate.load(literal(HOSTILE), dag_env, field="prompt")

    assert template.render({"item": "x"}) == HOSTILE
    assert template.name == "upstream prompt"


def test_an_unresolved_upstream_reference_is_not_a_prompt():
    class Unresolved:  # an XComArg passed where nothing resolves it
        def resolve(self, context):
            raise AssertionError("must not be resolved")

    with pytest.raises(OpenRouterConfigError, match=r"prompt is an upstream value .* not resolved"):
        PromptTemplate.load(Unresolved(), None, field="prompt")


def test_an_error_message_from_jinja_ends_with_one_period():
    with pytest.raises(PromptRenderError) as info:
        PromptTemplate.load("{{ name | uppr }}").render({"name": "a"})

    assert "No filter named 'uppr'." in str(info.value)
    assert ".." not in str(info.value)


def test_render_prompt_value_labels_nested_inline_templates():
    with pytest.raises(PromptRenderError) as info:
        render_prompt_value([{"role": "user", "content": "{{ q }}"}], None, {}, field="messages")

    assert info.value.template_name == "inline messages[0].content"


def test_build_messages_orders_system_history_and_prompt():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]

    assert build_messages(prompt="and now?", system_prompt="Be brief.", messages=history) == [
        {"role": "system", "content": "Be brief."},
        *history,
        {"role": "user", "content": "and now?"},
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "pass a prompt or a non-empty messages list"),
        ({"messages": [{"content": "x"}]}, r"messages\[0\] must be a dict with a 'role'"),
        ({"messages": [{"role": "user", "content": "x"}], "images": ["https://x/a.png"]}, "pass a prompt"),
    ],
)
def test_build_messages_rejects_incomplete_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_messages(**kwargs)


def test_images_become_content_parts_after_the_prompt_text(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"\x89PNG fake")

    [user] = build_messages(
        prompt="What is this?", images=["https://example.com/a.jpg", "cat.png"], image_roots=[tmp_path]
    )

    assert user["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()},
        },
    ]


def test_image_from_object_storage_uri_is_read_and_inlined(tmp_path):
    (tmp_path / "photo.JPG").write_bytes(b"jpeg bytes")

    part = image_part(f"file://{tmp_path}/photo.JPG")

    assert part["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(b"jpeg bytes").decode()


def test_data_url_is_passed_through():
    url = "data:image/webp;base64,AAAA"

    assert image_part(url) == {"type": "image_url", "image_url": {"url": url}}


def test_image_of_unknown_type_fails_naming_the_file(tmp_path):
    (tmp_path / "scan.tiffx").write_bytes(b"?")

    with pytest.raises(OpenRouterConfigError, match=r"Cannot tell the image type of .*scan\.tiffx"):
        image_part(tmp_path / "scan.tiffx", roots=[tmp_path])


# --- local images stay inside the DAG folder and template_searchpath -------------------------------

SECRET = b"\x89PNG top secret"


@pytest.fixture
def folders(tmp_path):
    """A DAG folder and a template_searchpath folder with one image each, and a secret outside both."""
    dags, extra, outside = tmp_path / "dags", tmp_path / "searchpath", tmp_path / "outside"
    for folder in (dags, extra, outside):
        folder.mkdir()
    (dags / "chart.png").write_bytes(b"\x89PNG chart")
    (extra / "logo.png").write_bytes(b"\x89PNG logo")
    (outside / "secret.png").write_bytes(SECRET)
    return dags, extra, outside


def data_of(part):
    return base64.b64decode(part["image_url"]["url"].split(",", 1)[1])


@pytest.mark.parametrize("from_upstream", [False, True])
def test_relative_images_are_found_in_the_dag_folder_then_the_template_searchpath(folders, from_upstream):
    dags, extra, _ = folders

    assert (
        data_of(image_part("chart.png", roots=[dags, extra], from_upstream=from_upstream)) == b"\x89PNG chart"
    )
    assert (
        data_of(image_part("logo.png", roots=[dags, extra], from_upstream=from_upstream)) == b"\x89PNG logo"
    )
    assert (
        data_of(image_part(dags / "chart.png", roots=[dags, extra])) == b"\x89PNG chart"
    )  # absolute, inside


@pytest.mark.parametrize(
    "image",
    [
        "../outside/secret.png",
        "../../../../../../../../{outside}/secret.png",  # as in the report: climb to / and back down
        "{outside}/secret.png",  # absolute
        "sub/../../outside/secret.png",
    ],
)
@pytest.mark.parametrize("from_upstream", [False, True])
def test_a_local_path_outside_the_dag_folder_and_searchpath_is_refused(folders, image, from_upstream):
    dags, extra, outside = folders
    image = image.format(outside=str(outside).lstrip("/") if image.startswith("..") else outside)

    with pytest.raises(
        OpenRouterConfigError, match=r"is outside the DAG folder and template_searchpath"
    ) as info:
        image_part(image, roots=[dags, extra], from_upstream=from_upstream)

    assert "file:// URI in the DAG file" in str(info.value)


def test_a_symlink_that_leads_out_of_the_dag_folder_is_refused(folders):
    dags, extra, outside = folders
    (dags / "innocent.png").symlink_to(outside / "secret.png")
    (dags / "linked_dir").symlink_to(outside, target_is_directory=True)

    for image in ("innocent.png", "linked_dir/secret.png"):
        with pytest.raises(OpenRouterConfigError, match=r"after resolving '\.\.' and symlinks"):
            image_part(image, roots=[dags, extra])


def test_a_symlink_that_stays_inside_is_followed(folders):
    dags, extra, _ = folders
    (dags / "alias.png").symlink_to(extra / "logo.png")

    assert data_of(image_part("alias.png", roots=[dags, extra])) == b"\x89PNG logo"


def test_a_missing_image_names_the_folders_it_was_looked_for_in(folders):
    dags, extra, _ = folders

    with pytest.raises(
        OpenRouterConfigError, match=r"'nope.png' not found in the DAG folder or template_searchpath"
    ):
        image_part("nope.png", roots=[dags, extra])


def test_a_local_path_without_a_dag_folder_is_refused(folders):
    _, _, outside = folders

    with pytest.raises(OpenRouterConfigError, match="the task has no DAG folder to find it in"):
        image_part(str(outside / "secret.png"))


@pytest.mark.parametrize("uri", ["file://{outside}/secret.png", "s3://aws_default@bucket/secret.png"])
def test_a_storage_uri_from_upstream_is_refused_before_anything_is_read(folders, uri):
    _, _, outside = folders

    with pytest.raises(OpenRouterConfigError, match="came from an upstream task") as info:
        image_part(uri.format(outside=outside), from_upstream=True)

    assert "write the URI in the DAG file" in str(info.value)


def test_an_object_storage_path_from_upstream_is_refused(folders):
    from airflow.sdk import ObjectStoragePath

    _, _, outside = folders

    with pytest.raises(OpenRouterConfigError, match="came from an upstream task"):
        image_part(ObjectStoragePath(f"file://{outside}/secret.png"), from_upstream=True)


def test_a_file_uri_written_by_the_dag_author_may_point_anywhere(folders):
    _, _, outside = folders

    assert data_of(image_part(f"file://{outside}/secret.png")) == SECRET


def test_urls_from_upstream_are_passed_on_unread():
    for url in ("https://example.com/a.png", "data:image/png;base64,AAAA"):
        assert image_part(url, from_upstream=True) == {"type": "image_url", "image_url": {"url": url}}


def test_build_messages_refuses_only_the_images_that_came_from_upstream(folders):
    dags, _, outside = folders
    uri = f"file://{outside}/secret.png"

    [user] = build_messages(prompt="p", images=[uri, "chart.png"], image_roots=[dags], upstream_images={1})
    assert data_of(user["content"][1]) == SECRET
    with pytest.raises(OpenRouterConfigError, match="came from an upstream task"):
        build_messages(prompt="p", images=["chart.png", uri], image_roots=[dags], upstream_images={1})
