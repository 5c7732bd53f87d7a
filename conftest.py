"""pytest set-up for tests/ and the notebooks that nbmake runs from book/.

CI runs two pytest workers on two cores: each worker and each notebook kernel gets one torch thread,
since OpenMP threads that spin-wait for a busy core slow batched kernels down by orders of magnitude.
"""
import os

os.environ.setdefault("MAPPING_MODE", "smoke")
os.environ.setdefault("MAPPING_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
