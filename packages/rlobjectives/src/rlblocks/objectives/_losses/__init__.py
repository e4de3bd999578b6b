"""Loss implementations (private); the public names are re-exported by rlblocks.objectives."""
