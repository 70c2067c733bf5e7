"""Plain autoencoders (shallow, vanilla, stacked, denoising): the code is the encoder output."""
from .bottleneck import Bottleneck


class Identity(Bottleneck):
    """z = h; no extra loss; no prior (a Gaussian fitted to the codes stands in where a task needs one)."""
