"""Packaging shim: the metadata is in pyproject.toml (PEP 621).

Kept so that ``python setup.py ...`` and old tools that look for this file
still work; setuptools reads everything from pyproject.toml.
"""
from setuptools import setup

setup()
