"""The checks shared by the families that load a Hugging Face checkpoint folder (Janus-Pro, Emu3, Chameleon/Anole).

They are general to transformers checkpoint folders (the video modality's Emu3 loader uses them too), so they live
in the core, :mod:`mmaccel.models.hf_folder`; this module keeps the image modality's import path.
"""

from mmaccel.models.hf_folder import checked_config, hf_config, load_complete

__all__ = ["checked_config", "hf_config", "load_complete"]
