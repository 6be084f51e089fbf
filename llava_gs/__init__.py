"""llava_gs: the LLaVA-1.5-style model with a GS vision tower, on transformers 5.x (issue 7).

So far: `llava_gs.conversation` (templates and the masking tokenisation). The model, processor,
training and chat land with issues 7 and 8.
"""
