"""Composition root: settings, container, application factory and CLI."""
