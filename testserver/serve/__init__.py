"""The process layer: the serve loop, one-shot mode, forked workers, the private channel."""
