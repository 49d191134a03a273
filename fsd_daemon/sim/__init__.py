"""Simulated rollout servers and jobs for the demo, the tests and the benchmarks, and what the
tests and benchmarks both run them on (``rayhead``, ``harness``, ``slowray``)."""

from __future__ import annotations

import os

# The contract between simulated jobs and the simulated NVML (fsd-gpu-exporter --simulate): a
# process with this variable holds that many bytes on each GPU its CUDA_VISIBLE_DEVICES names,
# as a loaded inference engine would. A process pinned to a GPU without it holds nothing there.
SIMULATED_GPU_MEMORY_ENV = "FSD_SIM_GPU_MEMORY_BYTES"
# A process given its GPU by Ray after it started (Ray sets CUDA_VISIBLE_DEVICES inside a GPU
# actor, not in the environment it was started with) creates its CUDA context later, as verl's
# trainer workers do: it has SIMULATED_GPU_MEMORY_ENV and this variable, a directory, in its
# start environment, and writes the GPU indices it holds into the file named by its pid there
# (register_gpu_context). The simulated driver reads that file; nothing else does.
SIMULATED_GPU_CONTEXTS_ENV = "FSD_SIM_GPU_CONTEXTS_DIR"


def register_gpu_context(gpu_indices: list[str]) -> None:
    """Tell the simulated driver that this process now holds these GPUs (a CUDA context)."""
    directory = os.environ.get(SIMULATED_GPU_CONTEXTS_ENV)
    if not directory:
        return
    path = os.path.join(directory, str(os.getpid()))
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(",".join(gpu_indices))
        os.replace(tmp, path)  # the driver never reads half a file
    except OSError:
        pass  # another machine than the job's (no such directory): no simulated GPU there
