"""CUDA C sources the host emulation's tests run, and how the known-bad ones are launched."""
