"""Workloads: programs that enclaves run (the kernel selftest's test_sgx, patterns, traces)."""
