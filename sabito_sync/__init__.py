"""Sabito customer sync: a reusable Django app that keeps each tenant's customers in
step with the Sabito business mapped to it (see docs/own-project.md, "Use it in your own
project")."""

__version__ = "1.0.0"
