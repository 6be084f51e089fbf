"""llava_gs: the LLaVA-1.5-style model with a GS vision tower, on transformers 5.x (issue 7).

So far: `llava_gs.conversation` (templates and the masking tokenisation) and `llava_gs.data` (LLaVA JSON
dataset with splat-cache lookup, collator). The model, processor,
training and chat land with issues 7 and 8.
"""
