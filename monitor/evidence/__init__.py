"""Evidence of violations: the recorder (per-camera ring buffers, one writer thread), media (H.264
clips, JPEG snapshots), faces (blurring) and retention."""
