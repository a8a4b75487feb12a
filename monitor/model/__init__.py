"""What a model is, shared by the live pipeline and training: bundles (bundle.py), frame backbones
(backbones.py), temporal heads (heads.py), frames decoded, sampled and resized (frames.py) and the
windows cut from their embeddings (windowing.py). The same code offline and live is how a model scores
the same in both."""
