"""Suite-wide pytest plugins: `tests.envskip` (CI refuses skipped tests) and pytester (to test it)."""

pytest_plugins = ("tests.envskip", "pytester")
