"""Sampling settings the default model is generated and measured with (CLI, bench, demo)."""

DEFAULTS = {"guidance_scale": 2.0, "temperature": 1.0, "top_k": None, "top_p": None}

#: The class-image style (mmaccel.data.scenes.CLASS_STYLES) the default GPT learns and the bench's FID
#: reference is drawn from; the tokenizer and the classifier train on the broader "broad" style.
GPT_STYLE = "generation"
