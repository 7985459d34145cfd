"""BEATs (Chen et al., 2022), implemented natively from the published recipe.

transformers has no BEATs, so the network lives here and reads Microsoft's official
``.pt`` checkpoints (``{'cfg', 'model'}``, optionally ``'label_dict'``) with
``torch.load(weights_only=True)``. Modules, in the order data flows:

    fbank.py       Kaldi-compatible log-mel fbank in torch, BEATs normalisation
    layout.py      samples -> frames -> patches -> tokens; padding-mask shrinking
    config.py      architecture settings from the checkpoint's cfg
    attention.py   gated relative-position self-attention
    model.py       patch embedding, positional conv, DeepNorm post-LN layers
    checkpoint.py  locate / read / check a checkpoint, build the model
    encoder.py     BeatsEncoder: the retrieval encoder contract
"""

from retrieval.encoders.beats.config import BeatsConfig
from retrieval.encoders.beats.encoder import BeatsEncoder, parse_layer
from retrieval.encoders.beats.model import BeatsModel, BeatsOutput

__all__ = ["BeatsConfig", "BeatsEncoder", "BeatsModel", "BeatsOutput", "parse_layer"]
