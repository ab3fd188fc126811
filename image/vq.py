"""Re-export of the core VQ tokenizer (:mod:`mmaccel.models.vq`), kept so ``mmaccel.image.vq`` imports stay valid.

The architecture moved to the core because image and video both tokenise frames with it and a
modality may not import another.
"""

from mmaccel.models.vq import (  # noqa: F401
    NAMED_CONFIGS,
    AttnBlock,
    Decoder,
    Downsample,
    Encoder,
    ResnetBlock,
    Upsample,
    VectorQuantizer,
    VQConfig,
    VQModel,
)

__all__ = ["VQConfig", "VQModel", "NAMED_CONFIGS", "Encoder", "Decoder", "VectorQuantizer"]
