"""Simulated rollout servers and jobs for the demo, the tests and the benchmarks."""

# The contract between simulated jobs and the simulated NVML (fsd-gpu-exporter --simulate): a
# process with this variable holds that many bytes on each GPU its CUDA_VISIBLE_DEVICES names,
# as a loaded inference engine would. A process pinned to a GPU without it holds nothing there.
SIMULATED_GPU_MEMORY_ENV = "FSD_SIM_GPU_MEMORY_BYTES"
