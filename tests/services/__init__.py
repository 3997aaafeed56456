"""Real services started privately on loopback for the test suites."""
