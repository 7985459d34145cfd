"""CLAP: audio and text towers through ``transformers.ClapModel`` (see ``encoder.py``).

Modules, in the order data flows:
    features       torch log-mel front end matching ``ClapFeatureExtractor``, deterministic
    laion_convert  LAION-CLAP ``.pt`` state dicts <-> transformers ``ClapModel`` keys
    loading        checkpoint resolution and loading (folder, hub id, LAION ``.pt``)
    encoder        :class:`ClapEncoder`, the registered ``clap`` encoder

Inference modes (fp32, bf16, int8; fp16 on CUDA) are shared with the other model encoders:
:mod:`retrieval.encoders.precision`.
"""

from retrieval.encoders.clap.encoder import ClapEncoder
from retrieval.encoders.clap.features import ClapFeatureConfig, ClapFeatures

__all__ = ["ClapEncoder", "ClapFeatureConfig", "ClapFeatures"]
