"""Drop-in conversion of existing PyTorch GANs.

* :func:`fuse` swaps fusable generator layers (Upsample + Conv2d, ConvTranspose2d(4, 2, 1),
  with a following activation) for ganx's fused modules.
* :func:`logits_and_bce` turns a discriminator ending in a sigmoid, trained with
  ``nn.BCELoss``, into one returning logits, trained with the fused BCE with logits.

Both read the model through torch.fx where it traces (patterns found across module
boundaries) and fall back to walking the module tree where it does not; both keep module
names and state_dict keys, and report what they changed and what they left, with reasons.
"""
from ganx.convert._fuse import FuseEntry, FuseReport, fuse
from ganx.convert._logits import LogitsReport, logits_and_bce

__all__ = ["fuse", "FuseReport", "FuseEntry", "logits_and_bce", "LogitsReport"]
