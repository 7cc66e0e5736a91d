"""AAPA's fixed discriminator (arXiv 2509.25148v2): its variants, its offline training, and its folder, which policy
training loads frozen to score the anchoring reward (docs/aapa.md)."""
