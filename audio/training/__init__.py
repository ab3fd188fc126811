"""Training scripts of the speech default model: codec, codec LM, phoneme recogniser."""
