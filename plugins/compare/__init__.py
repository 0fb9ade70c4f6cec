"""The compare plugin: A/B comparison of two snapshots (speed, quality, size, significance).

`tunewatch compare A B` runs it by hand; the daemon runs it in a child process on each new
best snapshot. Nothing imported here at module level may import torch.
"""
