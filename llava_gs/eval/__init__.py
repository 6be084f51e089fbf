"""GS-LLaVA in lmms-eval: `lmms_plugin.LlavaGSLmms`, registered as `--model llava_gs` through the
`lmms_eval.models` entry point. lmms_eval is imported only under this package."""
