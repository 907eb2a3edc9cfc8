import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))

# 2-core machines: keep intra-op threads bounded and results deterministic.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
