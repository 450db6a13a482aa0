"""Test-wide settings: one CPU thread per test process (the suite runs as 2 processes on 2 cores)."""

import torch

torch.set_num_threads(1)
