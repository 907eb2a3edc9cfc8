import os
import pathlib
import sys

# Busy-waiting OpenMP threads make a shared 2-core machine crawl (several-fold slower steps).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))

# 2-core machines: keep intra-op threads bounded and results deterministic.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
