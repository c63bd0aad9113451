"""Task decorators of the OpenRouter provider: ``@task.openrouter`` (see :mod:`.openrouter`)."""
