"""User-space programs that drive the kernel model through its ioctls, as the kernel
selftest's ``test_sgx`` does (tools/testing/selftests/sgx)."""
