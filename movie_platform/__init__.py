"""Laptop tooling and the `movie-platform` command: embedded stack, Airflow runtime, doctor, demo, notebooks.

It may import the code location (`movie_assets`); the code location never imports it
(a test checks it), so a deployment needs none of this.
"""
