"""Fitting splat sets to images: initialisation, the renderer and the optimisation loop."""
