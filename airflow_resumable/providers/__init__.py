"""Resumable drop-ins for stock provider operators, one package per provider (``databricks``, ``amazon``)."""

from __future__ import annotations
