"""Serving GS-LLaVA: `python -m llava_gs.serve.web` (the browser demo) on `session` (the same, without a page)."""
