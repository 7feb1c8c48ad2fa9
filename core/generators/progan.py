"""ProGAN-256 in the GAN Dissection layout (filled in by the ProGAN work)."""

PROGAN_SPECS: dict = {}
