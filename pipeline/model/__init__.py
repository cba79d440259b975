"""The frozen backbone and what LinCIR puts on it: the text encoder with a pseudo-token, phi,
the noise, and the world backbone's own CLIP training."""
