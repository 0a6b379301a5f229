"""Shared diffusers helpers for VideoGen and ImageGen: placement, loading, per-step progress, media."""
