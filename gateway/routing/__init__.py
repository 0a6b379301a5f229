"""Routing capability calls to healthy backends and relaying them as raw bytes."""
