"""Benchmarks of airflow-openrouter (issue 7): ``python -m bench [--quick] [--peers] [--only NAME]``.

Every figure is reported next to a baseline measured in the same run (these machines are shared and
noisy, so absolute times drift): see ``bench/__main__.py`` for the list and ``bench/RESULTS.md`` for
the last full run.
"""
